"""Fuzz `launch --queue Q ...`: every run is only ever queued, never started."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from launchctl.launch import PRIORITIES

from .harness import HELLO, SETTINGS, Result, Seed, check
from .strategies import (
    ARG_TEXT,
    LAUNCH_SPEC,
    RESOURCE_ARGS,
    SET_PAIR,
    SET_VAR,
    argv_safe,
    config_arg,
    config_value,
    mostly,
    sometimes,
)


def _launched(seed: Seed, queue: str, sets: list[str]) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        run_id = result.out.strip()
        assert re.fullmatch(r"[a-z0-9]{8}", run_id), f"no run id on stdout:\n{result}"
        store = seed.store()
        try:
            run = store.runs.get(run_id)
        finally:
            store.close()
        assert run["id"] == run_id and run["state"] == "queued", str(result)
        assert run["queue_name"] == queue, str(result)
        run_config = (run["spec"].get("overrides") or {}).get("run_config") or {}
        for pair in sets:
            key = pair.partition("=")[0].strip()
            assert key in run_config, f"--set {key} is not in the run's config:\n{result}"

    return verify


@SETTINGS
@given(
    queue=mostly(st.sampled_from(["q", "q", "box"]), ARG_TEXT.filter(bool)),
    source=mostly(
        st.sampled_from(
            [
                ["--job=hello"],
                ["--job=hello:v0"],
                ["--job=img"],
                ["--uri=" + HELLO, "--entry-point=python train.py"],
                ["--docker-image=launchctl-test/busybox:latest"],
            ]
        ),
        st.one_of(
            st.just([]),
            st.builds(lambda j: ["--job=" + j], ARG_TEXT),
            st.builds(lambda d: ["--docker-image=" + d], ARG_TEXT),
            st.builds(lambda u, e: ["--uri=" + u, "--entry-point=" + e], ARG_TEXT, ARG_TEXT),
        ),
    ),
    sets=st.lists(mostly(st.sampled_from(["lr=0.5", "epochs=3"]), SET_PAIR, 2), max_size=3),
    set_vars=st.lists(
        mostly(st.sampled_from(["size=large", "n=2", "n=4"]), SET_VAR, 2), max_size=2
    ),
    config=sometimes(config_arg(LAUNCH_SPEC)),
    resource_args=sometimes(config_arg(RESOURCE_ARGS)),
    flags=st.dictionaries(
        st.sampled_from(
            [
                "--priority",
                "--name",
                "--project",
                "--entity",
                "--args",
                "--entry-point",
                "--dockerfile",
                "--resource",
                "--job-name",  # W&B's flags for the job -u creates (issue 11)
                "--git-version",
                "--build-context",
                "--base-image",
            ]
        ),
        mostly(st.sampled_from([*PRIORITIES, "python train.py", "x"]), ARG_TEXT, 2),
        max_size=3,
    ),
)
def test_launch_bad_input_gets_one_line_and_no_write(
    seed: Seed,
    queue: str,
    source: list[str],
    sets: list[str],
    set_vars: list[str],
    config: Any,
    resource_args: Any,
    flags: dict[str, str],
) -> None:
    """`launch --queue Q ...`: queued, never run (no agent is started)."""
    argv = ["launch", *source]
    argv += [f"--set={s}" for s in sets]
    argv += [f"--set-var={s}" for s in set_vars]
    if config is not None:
        argv.append("--config=" + config_value(seed, config))
    if resource_args is not None:
        argv.append("--resource-args=" + config_value(seed, resource_args))
    argv += [f"{flag}={argv_safe(value)}" for flag, value in flags.items()]
    argv.append(f"--queue={queue}")  # last, and never empty: the run is only ever queued
    check(seed.home, *argv, on_success=_launched(seed, queue, sets))
