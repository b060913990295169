"""Unit tests that kill the mutants `nox -s mutate` found surviving (issue 19).

The CLI tests drive these modules through a subprocess, where a mutant in mutmut's copy
is never imported; these call the pure functions directly. Each asserts a boundary or a
message the README promises: an ask equal to a ceiling is accepted, one above it refused,
a refusal names the field, a launcher's value is marked as the launcher's.
"""

from __future__ import annotations

import re

import pytest

from launchctl import guardrails, states, variables
from launchctl.errors import ConfigError, LaunchctlError, UsageError
from launchctl.guardrails import Limits, apply_ceilings, asks, gpu_count
from launchctl.macros import Macros
from launchctl.states import State

# --- states -------------------------------------------------------------------------


def test_check_move_names_each_illegal_source_and_the_target() -> None:
    with pytest.raises(ValueError) as err:
        states.check_move(["queued", "finished"], "running")
    assert str(err.value) == "['queued', 'finished'] -> running is not a legal move"


def test_sources_of_is_every_state_that_lists_the_target() -> None:
    assert states.sources_of(State.RUNNING) == {State.STARTING}
    assert states.sources_of(State.QUEUED) == {
        State.CLAIMED,
        State.BUILDING,
        State.STARTING,
        State.RUNNING,
        State.PREEMPTED,
    }
    assert states.sources_of(State.CLAIMED) == {State.QUEUED}


def test_is_terminal_only_for_the_terminal_states() -> None:
    assert [s for s in State if states.is_terminal(s)] == [
        State.FINISHED,
        State.FAILED,
        State.STOPPED,
    ]


class _RecordingRuns:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def move(self, run_id, sources, to, **kw):  # type: ignore[no-untyped-def]
        self.calls.append((run_id, frozenset(sources), to, kw))
        return "starting"


class _Store:
    def __init__(self) -> None:
        self.runs = _RecordingRuns()


def test_move_passes_every_allowed_source_or_the_expected_ones_to_the_store() -> None:
    store = _Store()
    left = states.move(store, "r1", State.RUNNING, agent_id="a1", message="up", pid=7)  # type: ignore[arg-type]
    assert left is State.STARTING
    assert store.runs.calls == [
        (
            "r1",
            frozenset({State.STARTING}),
            State.RUNNING,
            {"agent_id": "a1", "message": "up", "via": None, "pid": 7},
        )
    ]
    store.runs.calls.clear()
    states.move(store, "r2", State.STOPPED, expect=frozenset({State.QUEUED}))  # type: ignore[arg-type]
    assert store.runs.calls == [
        (
            "r2",
            frozenset({State.QUEUED}),
            State.STOPPED,
            {"agent_id": None, "message": None, "via": None},
        )
    ]
    store.runs.calls.clear()
    states.move(store, "r3", State.FINISHED, expect=frozenset({State.STARTING}),  # type: ignore[arg-type]
                via=(State.RUNNING, {"pid": 7}), exit_code=0)  # fmt: skip
    assert store.runs.calls == [
        (
            "r3",
            frozenset({State.STARTING}),
            State.FINISHED,
            {"agent_id": None, "message": None, "via": ("running", {"pid": 7}), "exit_code": 0},
        )
    ]


# --- guardrails ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "ask", "ceiling"),
    [
        ("cpus", 2, 2),
        ("memory", "4g", "4g"),
        ("max_run_time", "1h", 3600),
        ("gpus", 2, 2),
    ],
)
def test_an_ask_equal_to_a_ceiling_is_accepted(what: str, ask: object, ceiling: object) -> None:
    out = apply_ceilings("q", {what: ceiling}, asks({what: ask}))
    assert out == asks({what: ask})


@pytest.mark.parametrize(
    ("what", "ask", "ceiling", "message"),
    [
        ("cpus", 2.5, 2, "the run asks for cpus 2.5, above queue q's ceiling of 2"),
        ("memory", "5g", "4g", "the run asks for memory 5g, above queue q's ceiling of 4g"),
        (
            "max_run_time",
            "2h",
            "1h",
            "the run asks for max_run_time 7200s, above queue q's ceiling of 3600s",
        ),
        ("gpus", 3, 2, "the run asks for gpus 3, above queue q's ceiling of 2"),
        ("gpus", "all", 2, "the run asks for gpus all, above queue q's ceiling of 2"),
    ],
)
def test_an_ask_above_a_ceiling_is_refused_naming_both(
    what: str, ask: object, ceiling: object, message: str
) -> None:
    with pytest.raises(LaunchctlError) as err:
        apply_ceilings("q", {what: ceiling}, asks({what: ask}))
    assert str(err.value) == message


def test_a_ceiling_with_no_ask_becomes_the_limit_and_an_ask_below_it_stays() -> None:
    ceilings = {"cpus": 4, "memory": "8g", "max_run_time": "2h", "gpus": 2}
    assert apply_ceilings("q", ceilings, Limits()) == Limits(
        cpus=4.0, memory=8 << 30, max_run_time=7200.0
    )
    below = asks({"cpus": 1, "memory": "1g", "max_run_time": 60, "gpus": 1})
    assert apply_ceilings("q", ceilings, below) == below
    # No GPU ask under a GPU ceiling: zero GPUs, accepted even under a ceiling of 0.
    assert apply_ceilings("q", {"gpus": 0}, Limits()) == Limits()


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (1 << 40, "1t"),
        (3 << 30, "3g"),
        (1 << 20, "1m"),
        (1536 << 20, "1536m"),
        (1 << 10, "1k"),
        (1000, "1000 bytes"),
    ],
)
def test_size_text(size: int, text: str) -> None:
    assert guardrails._size_text(size) == text


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (guardrails.parse_memory, "lots", "memory must be a size like 512m or 4g, got 'lots'"),
        (guardrails.parse_memory, "0g", "memory must be more than 0, got '0g'"),
        (guardrails.parse_memory, 0, "memory must be more than 0, got 0"),
        (guardrails.parse_memory, True, "memory must be a size like 512m or 4g, got True"),
        (
            guardrails.parse_duration,
            "soon",
            "max_run_time must be a duration like 3600, 90s, 30m or 2h, got 'soon'",
        ),
        (
            guardrails.parse_duration,
            0,
            "max_run_time must be a duration like 3600, 90s, 30m or 2h, got 0",
        ),
        (
            guardrails.parse_duration,
            True,
            "max_run_time must be a duration like 3600, 90s, 30m or 2h, got True",
        ),
        (guardrails.parse_cpus, "many", "cpus must be a number, got 'many'"),
        (guardrails.parse_cpus, 0, "cpus must be more than 0, got 0"),
        (guardrails.parse_cpus, "-1", "cpus must be more than 0, got '-1'"),
        (
            guardrails.parse_memory,
            "9" * 400 + "g",
            "memory is not a usable number: '" + "9" * 40 + "'",
        ),
    ],
)
def test_each_refusal_says_what_and_the_value(parse, value, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        parse(value)
    assert str(err.value) == message


def test_the_smallest_sizes_and_durations_are_accepted() -> None:
    assert guardrails.parse_memory(1) == 1
    assert guardrails.parse_memory("1b") == 1
    assert guardrails.parse_duration(1) == 1.0
    assert guardrails.parse_duration(0.5) == 0.5
    assert guardrails.parse_duration("2m") == 120.0
    with pytest.raises(ConfigError, match=r"^ceiling must be"):
        guardrails._parse_memory("x", "ceiling")


def test_gpu_count() -> None:
    assert gpu_count('"2"') == 2
    assert gpu_count(' "device=0,1" ') == 2
    assert gpu_count("all") is None
    for bad in ("x", "X2"):
        with pytest.raises(ConfigError):
            gpu_count(bad)
    with pytest.raises(ConfigError) as err:
        gpu_count("x")
    assert str(err.value) == "gpus must be all, a count or device=ID,...; got 'x'"


def test_limits_as_dict_leaves_out_what_is_not_limited() -> None:
    assert Limits(cpus=1.0, gpus="all").as_dict() == {"cpus": 1.0, "gpus": "all"}


@pytest.mark.parametrize(
    ("ceilings", "message"),
    [
        ([], "queue config: ceilings must be an object"),
        (
            {"disk": 1},
            "queue config: ceilings has unknown key 'disk'"
            " (allowed: cpus, memory, gpus, max_run_time)",
        ),
        ({"gpus": "all"}, "queue config: a gpus ceiling must be a count, not all"),
        ({"cpus": "x"}, "cpus must be a number, got 'x'"),
    ],
)
def test_check_ceilings_config_refuses(ceilings: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        guardrails.check_ceilings_config(ceilings)
    assert str(err.value) == message


def test_check_ceilings_config_accepts_every_key() -> None:
    guardrails.check_ceilings_config(
        {"cpus": 1, "memory": "1g", "gpus": "device=0", "max_run_time": 60}
    )


# --- variables -----------------------------------------------------------------------


def test_typed_strings() -> None:
    assert variables._typed("string", 3, "v") == "3"
    value = "abc"
    assert variables._typed("string", value, "v") is value
    for bad in (None, [1], {"a": 1}):
        with pytest.raises(UsageError) as err:
            variables._typed("string", bad, "v")
        assert str(err.value) == f"template variable v must be a string, got {bad!r}"


def test_typed_numbers_keep_a_written_decimal_point() -> None:
    assert variables._typed("number", "2", "v") == 2
    assert isinstance(variables._typed("number", "2", "v"), int)
    assert isinstance(variables._typed("number", "2.0", "v"), float)
    assert variables._typed("number", "2.5", "v") == 2.5
    assert variables._is_number(10**400) is False
    assert variables._is_number(float("inf")) is False


def _refusal(schema: object) -> str:
    with pytest.raises(ConfigError) as err:
        variables.check_definition("lr", schema)
    return str(err.value)


def test_check_definition_refusals_name_the_field() -> None:
    assert _refusal([]) == "template variable lr: its definition must be an object"
    assert _refusal({"type": "number", "minimum": "a"}) == (
        "template variable lr: minimum must be a number"
    )
    assert _refusal({"type": "string", "enum": []}) == (
        "template variable lr: enum must be a non-empty list of options"
    )
    assert _refusal({"type": "string", "enum": "ab"}) == (
        "template variable lr: enum must be a non-empty list of options"
    )
    assert _refusal({"type": "integer", "default": "x"}) == (
        "template variable lr: default template variable lr must be an integer, got 'x'"
    )
    assert _refusal({"type": "integer", "enum": ["x"]}) == (
        "template variable lr: enum option template variable lr must be an integer, got 'x'"
    )
    assert _refusal({"type": "integer", "maximum": 3, "enum": [1, 4]}) == (
        "template variable lr: enum option 4 is above the maximum 3"
    )
    assert _refusal({"type": "integer", "minimum": 5, "default": 4}) == (
        "template variable lr: default 4 is below the minimum 5"
    )
    assert _refusal({"type": "string", "size": 1}) == (
        "template variable lr: unknown key 'size'"
        " (allowed: default, description, enum, maximum, minimum, type)"
    )
    with pytest.raises(ConfigError) as err:
        variables.check_definition("a b", {"type": "string"})
    assert str(err.value) == "template variable a b: invalid name (letters, digits, '_' and '-')"


def test_check_definition_keeps_the_description_and_a_default_in_the_enum() -> None:
    out = variables.check_definition(
        "lr", {"type": "integer", "enum": [1, 2], "default": 2, "description": 7}
    )
    assert out == {"type": "integer", "enum": [1, 2], "default": 2, "description": "7"}


def test_check_definitions() -> None:
    with pytest.raises(ConfigError) as err:
        variables.check_definitions({"template_variables": [1]})
    assert str(err.value) == "queue config: template_variables must be an object"
    with pytest.raises(ConfigError) as err:
        variables.check_definitions(
            {"a": "{{x}} {{y}}", "template_variables": {"x": {"type": "string"}}}
        )
    assert str(err.value) == (
        "queue config uses {{y}} but has no definition for it: define it under"
        ' template_variables, e.g. "template_variables": {"y": {"type": "string"}}'
    )
    # A field named only inside template_variables (a description) is not a use.
    ok = variables.check_definitions(
        {"a": 1, "template_variables": {"x": {"type": "string", "description": "{{z}}"}}}
    )
    assert ok == {"x": {"type": "string", "description": "{{z}}"}}


def test_resolve_values() -> None:
    defs = {
        "n": {"type": "integer", "enum": [1, 2], "default": 2},
        "s": {"type": "string"},
    }
    assert variables.resolve_values("q", defs, {"s": "x"}) == {"n": 2, "s": "x"}
    with pytest.raises(UsageError) as err:
        variables.resolve_values("q", defs, {"t": 1, "s": "x"})
    assert str(err.value) == "Queue q does not support overriding t"
    with pytest.raises(UsageError) as err:
        variables.resolve_values("q", defs, {})
    assert str(err.value) == (
        "queue q needs a value for template variable s (it has no default): pass --set-var s=VALUE"
    )
    with pytest.raises(UsageError) as err:
        variables.resolve_values("q", defs, {"n": "3", "s": "x"})
    assert str(err.value) == "template variable n: value 3 is not one of: 1, 2"


def _macros() -> Macros:
    return Macros({"run_name": "r-1", "image_uri": "img"}, {"HOME_DIR": "/h"})


def test_pieces_mark_what_a_launcher_chose() -> None:
    pieces = variables.pieces(
        "a{{x}}b${run_name}c${image_uri}${HOME_DIR}{{y}}${nope}d", {"x": 1}, _macros()
    )
    assert pieces == [
        ("a", False),
        ("1", True),
        ("b", False),
        ("r-1", True),
        ("c", False),
        ("img", False),
        ("/h", False),
        ("{{y}}", False),
        ("${nope}", False),
        ("d", False),
    ]
    # Without macros, a macro stays as written and a field still fills.
    assert variables.pieces("${run_name}/{{x}}", {"x": "v"}) == [
        ("${run_name}", False),
        ("/", False),
        ("v", True),
    ]


def test_render_passes_the_macros_down_and_copies_a_whole_value() -> None:
    value = {"k": [1]}
    config = {
        "a": ["${run_name}", {"b": "{{x}}"}],
        "c": "{{ x }}",
        "d": "${run_name}-{{x}}",
        "e": 3,
    }
    out = variables.render(config, {"x": value}, _macros())
    assert out == {
        "a": ["r-1", {"b": {"k": [1]}}],
        "c": {"k": [1]},
        "d": "r-1-{'k': [1]}",
        "e": 3,
    }
    assert out["c"] is not value
    assert out["c"]["k"] is not value["k"]
    assert re.fullmatch(r"\$\{run_name\}", variables.render("${run_name}", {}))


# --- masking -------------------------------------------------------------------------


def test_masker_repr_counts_values_and_never_shows_one() -> None:
    from launchctl.masking import Masker

    assert repr(Masker([])) == "Masker(0 values)"
    assert repr(Masker(["hunter2"])) == "Masker(1 values)"
    assert repr(Masker(["a", "bb", "ccc", ""])) == "Masker(3 values)"


def test_masker_mask_text_keeps_undecodable_bytes_and_masks_the_rest() -> None:
    from launchctl.masking import Masker

    text = "x\udcffs3cret y"  # a byte that was not UTF-8, as surrogateescape reads it
    assert Masker(["s3cret"]).mask_text(text) == "x\udcff*** y"
    assert Masker([]).mask_text(text) == text


def test_masker_can_stream_again_after_a_flush() -> None:
    from launchctl.masking import Masker

    m = Masker(["abcd"])
    assert m.feed(b"xab") + m.flush() == b"xab"
    assert m.feed(b"yabcdz") + m.flush() == b"y***z"
    assert Masker(["k"]).feed(b"akb") == b"a***b"
