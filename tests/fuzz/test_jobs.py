"""Fuzz `job create code PATH -E CMD`."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from .harness import HELLO, SETTINGS, Result, Seed, check
from .strategies import ARG_TEXT, mostly


def _job_created(seed: Seed, name: str | None) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        match = re.fullmatch(
            r"(?:created|unchanged, reusing) job (\S+)/([^/\s]+):v(\d+) \(code\)"
            r"(?: \(aliases: [^\n]*\))?\n",
            result.out,
        )
        assert match, f"unexpected output:\n{result}"
        store = seed.store()
        try:
            row = store.jobs.version(match.group(2), f"v{match.group(3)}", entity=match.group(1))
        finally:
            store.close()
        assert row["source_type"] == "code", str(result)
        if name:  # an empty --name is the default name
            assert row["name"] == name, str(result)

    return verify


FLAGS = ["--name", "--project", "--entity", "--dockerfile", "--build-context", "--alias",
         "--runtime", "--base-image", "--description", "--git-hash"]  # fmt: skip


@SETTINGS
@given(
    path=mostly(
        st.sampled_from([HELLO, "code"]),
        st.one_of(st.sampled_from(["empty-dir", "a file.txt", "missing", "~nosuchuser"]), ARG_TEXT),
    ),
    entry=mostly(
        st.sampled_from(["python train.py", "true"]),
        st.one_of(st.none(), st.just("python missing.py"), ARG_TEXT),
    ),
    flags=st.dictionaries(
        st.sampled_from(FLAGS),
        mostly(st.sampled_from(["train.py", "link", "ok-name", ".", "3.11"]), ARG_TEXT, 2),
        max_size=4,
    ),
)
def test_job_create_code_bad_input_gets_one_line_and_no_write(
    seed: Seed, path: str, entry: str | None, flags: dict[str, str]
) -> None:
    """`job create code PATH -E CMD` with odd paths, entry points, names, Dockerfiles, and
    W&B's options (build context, alias, runtime, base image, description, git hash)."""
    argv = ["job", "create", "code"]
    if entry is not None:
        argv.append("--entry-point=" + entry)
    argv += [f"{flag}={value}" for flag, value in flags.items()]
    argv += ["--", path]  # a path like "-h" is a path, not an option
    check(seed.home, *argv, on_success=_job_created(seed, flags.get("--name")))
