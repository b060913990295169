"""Fuzz random arguments after every command that neither runs nor waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .harness import SETTINGS, Seed, check
from .strategies import ARG_TEXT, OPTION_TOKENS, SAFE_COMMANDS, argv_safe


@SETTINGS
@given(
    command=st.sampled_from(SAFE_COMMANDS),
    tokens=st.lists(
        st.one_of(st.sampled_from(OPTION_TOKENS), st.sampled_from(["q", "box", "hello"]), ARG_TEXT),
        max_size=6,
    ),
)
def test_any_argv_gets_one_line_or_a_usage_error(
    seed: Seed, command: list[str], tokens: list[str]
) -> None:
    """Random arguments after any command that neither runs nor waits."""
    check(seed.home, *command, *(argv_safe(t) for t in tokens))
