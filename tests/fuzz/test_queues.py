"""Fuzz `queue create/edit --config` and `queue template set`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from .harness import SETTINGS, Result, Seed, check, queue_holds
from .strategies import (
    ARG_TEXT,
    DEFINITION,
    DEFINITIONS,
    NUMBER_TEXT,
    QUEUE_CONFIG,
    RESOURCES,
    TEMPLATE_NAMES,
    argv_safe,
    config_arg,
    config_value,
    mostly,
    sometimes,
)


@SETTINGS
@given(arg=config_arg(QUEUE_CONFIG), edit=st.booleans(), resource=st.sampled_from(RESOURCES))
def test_queue_config_bad_input_gets_one_line_and_no_write(
    seed: Seed, arg: Any, edit: bool, resource: str
) -> None:
    """`queue create NAME --config X` and `queue edit q --config X`, inline or from a file."""
    value = config_value(seed, arg)
    if edit:
        check(
            seed.home,
            "queue",
            "edit",
            "q",
            "--config",
            value,
            on_success=queue_holds(seed, "q", value),
        )
    else:
        name = f"fz{next(seed.names)}"
        check(
            seed.home,
            "queue", "create", name, "--resource", resource, "--config", value,
            on_success=queue_holds(seed, name, value),
        )  # fmt: skip


def _defined(seed: Seed, queue: str, names: list[str]) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        store = seed.store()
        try:
            config = store.queues.get(queue)["config"]
        finally:
            store.close()
        for name in names:
            assert name in (config.get("template_variables") or {}), str(result)

    return verify


@SETTINGS
@given(
    queue=mostly(st.just("q"), st.one_of(st.sampled_from(["box", "nope"]), ARG_TEXT)),
    variable=mostly(
        st.sampled_from(["x", "size", "n"]),
        st.one_of(st.none(), TEMPLATE_NAMES.map(argv_safe), ARG_TEXT),
    ),
    options=st.one_of(
        st.fixed_dictionaries(
            {"--type": st.sampled_from(["string", "integer", "number"])},
            optional={
                "--min": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--max": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--default": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--options": st.one_of(st.sampled_from(["a,b", "1,2", ",,", " , a"]), ARG_TEXT),
                "--description": ARG_TEXT,
            },
        ),
        st.dictionaries(
            st.sampled_from(
                ["--type", "--min", "--max", "--default", "--options", "--description"]
            ),
            st.one_of(NUMBER_TEXT, st.sampled_from(["string", "integer", "number", "bool"])),
            max_size=6,
        ),
    ),
    file=sometimes(config_arg(st.one_of(DEFINITIONS, DEFINITION))),
)
def test_queue_template_set_bad_input_gets_one_line_and_no_write(
    seed: Seed, queue: str, variable: str | None, options: dict[str, str], file: Any
) -> None:
    """`queue template set QUEUE VAR --type T --min X --max Y --default D` and `--file`."""
    argv = ["queue", "template", "set"]
    argv += [f"{flag}={argv_safe(value)}" for flag, value in options.items()]
    if file is not None:
        argv.append("--file=" + config_value(seed, file))
    argv += ["--", queue] + ([variable] if variable is not None else [])
    names = [variable] if variable else []  # an empty VARIABLE: the names in --file
    check(seed.home, *argv, on_success=_defined(seed, queue, names))
