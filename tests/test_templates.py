"""Queue config templates: definitions, typed values, limits, and refusals that write nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launchctl import variables
from launchctl.errors import ConfigError, UsageError
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Store
from tests.conftest import EXAMPLES, cli, cli_json, table_counts

HELLO = str(EXAMPLES / "hello")
GPU_CONFIG = {
    "resource_args": {"local-process": {"env": {"NGPU": "{{gpus}}", "SIZE": "size-{{size}}"}}},
    "template_variables": {
        "gpus": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1,
                 "description": "GPUs per run"},
        "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
    },
}  # fmt: skip


def gpu_queue() -> None:
    cli("queue", "create", "gpu", "--config", json.dumps(GPU_CONFIG), check=True)


# -- the pieces ----------------------------------------------------------------------------
def test_fields_are_found_anywhere_in_string_values_but_not_keys() -> None:
    config = {"a": "{{x}}", "b": ["pre-{{ y }}-post", {"c": 3}], "{{key}}": "plain"}
    assert variables.fields(config) == ["x", "y"]


def test_a_whole_value_field_becomes_the_typed_value_and_a_partial_one_text() -> None:
    rendered = variables.render(
        {"n": "{{gpus}}", "s": "x{{gpus}}", "k": [" {{gpus}} "]}, {"gpus": 2}
    )
    assert rendered == {"n": 2, "s": "x2", "k": [2]}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 4}, "minimum 5 is above maximum 4"),
        ({"type": "integer", "maximum": 4, "default": 9}, "default 9 is above the maximum 4"),
        ({"type": "string", "enum": ["a"], "default": "b"}, "default 'b' is not one of: a"),
        ({"type": "boolean"}, "type must be one of string, integer, number"),
        ({"type": "string", "minimum": 1}, "a string has no minimum"),
        ({"type": "integer", "bogus": 1}, "unknown key 'bogus'"),
        ({"type": "integer", "enum": ["x"]}, "must be an integer"),
    ],
)
def test_bad_definitions_are_refused(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        variables.check_definition("v", schema)


def test_a_config_that_uses_an_undefined_field_cannot_be_saved(home: Path) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli(
        "queue",
        "create",
        "q",
        "--config",
        '{"resource_args": {"local-process": {"env": {"A": "{{a}}"}}}}',
    )
    assert proc.returncode == 1 and "uses {{a}} but has no definition" in proc.stderr
    assert table_counts(home) == before


# -- property: a value is accepted exactly when it is inside its limits ---------------------
bounds = st.integers(min_value=-1000, max_value=1000)


def _numbers_near(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Numbers on, just inside and just outside each limit, and anywhere else."""
    edges = [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1]
    return st.one_of(
        st.sampled_from(edges),
        st.sampled_from([float(e) for e in edges] + [lo - 0.5, lo + 0.5, hi - 0.5, hi + 0.5]),
        st.integers(min_value=-(10**6), max_value=10**6),
        st.floats(min_value=lo - 2, max_value=hi + 2, allow_nan=False),
    )


@given(lo=bounds, hi=bounds, data=st.data(), kind=st.sampled_from(["integer", "number"]),
       as_text=st.booleans())  # fmt: skip
def test_a_number_is_accepted_exactly_when_it_is_inside_its_limits(
    lo: int, hi: int, data: st.DataObject, kind: str, as_text: bool
) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    number = data.draw(_numbers_near(lo, hi))
    # From the command line a value comes as text (--set-var v=3): whole numbers here.
    value: Any = str(number) if as_text and isinstance(number, int) else number
    schema = {"type": kind, "minimum": lo, "maximum": hi}
    definitions = {"v": variables.check_definition("v", schema)}
    if kind == "integer" and isinstance(number, float) and not number.is_integer():
        with pytest.raises(UsageError, match=r"^template variable v must be an integer, got "):
            variables.resolve_values("q", definitions, {"v": value})
        return
    typed = int(number) if kind == "integer" else number
    if lo <= typed <= hi:
        out = variables.resolve_values("q", definitions, {"v": value})["v"]
        assert out == typed and type(out) is type(typed)
    else:
        side = f"below the minimum {lo}" if typed < lo else f"above the maximum {hi}"
        with pytest.raises(UsageError, match=rf"^template variable v: value .* is {side}$"):
            variables.resolve_values("q", definitions, {"v": value})


@given(
    value=st.one_of(
        st.text(max_size=12).filter(lambda t: not _looks_numeric(t)),
        st.booleans(),
        st.none(),
        st.sampled_from([math.nan, math.inf, -math.inf, "nan", "inf", "-inf", "1e999"]),
    ),
    kind=st.sampled_from(["integer", "number"]),
)
def test_what_is_not_a_number_is_refused_whatever_the_limits(value: Any, kind: str) -> None:
    definitions = {"v": variables.check_definition("v", {"type": kind, "minimum": -(10**9)})}
    with pytest.raises(UsageError, match=rf"^template variable v must be an? {kind}, got "):
        variables.resolve_values("q", definitions, {"v": value})


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@given(options=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True),
       data=st.data())  # fmt: skip
def test_string_options_accept_exactly_their_members(
    options: list[str], data: st.DataObject
) -> None:
    value = data.draw(st.one_of(st.sampled_from(options), st.text(max_size=6)))
    definitions = {"v": variables.check_definition("v", {"type": "string", "enum": options})}
    if value in options:
        assert variables.resolve_values("q", definitions, {"v": value})["v"] == value
    else:
        with pytest.raises(UsageError, match="is not one of: "):
            variables.resolve_values("q", definitions, {"v": value})


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(st.integers(min_value=-5, max_value=12), st.sampled_from(["2", "x", "1.5", ""]))
)
def test_no_refused_launch_writes_anything(store: Store, value: Any) -> None:
    if store.queues.find("gpu") is None:
        from launchctl import queues

        queues.create(store, "gpu", resource="local-process", config=GPU_CONFIG)
        from launchctl import jobs

        jobs.create_code_job(store, HELLO, entrypoint=["python", "train.py"], name="hello")
    before = table_counts(store.root)
    spec = prepare_spec(LaunchRequest(queue="gpu", job="hello", set_vars=[f"gpus={value}"]))
    accepted = (isinstance(value, int) and 1 <= value <= 4) or value == "2"  # gpus: 1 to 4
    if accepted:
        run = submit(store, spec)
        assert run["spec"]["template_variables"]["gpus"] == int(value)
        return
    with pytest.raises(UsageError, match="template variable gpus"):
        submit(store, spec)
    assert table_counts(store.root) == before


# -- through the CLI -------------------------------------------------------------------------
def test_member_launches_with_a_typed_value_and_the_run_gets_it() -> None:
    gpu_queue()
    proc = cli("launch", "-q", "gpu", "-u", HELLO, "-E", "python train.py", "--set-var", "gpus=2",
               "--json")  # fmt: skip
    run = json.loads(proc.stdout)
    assert run["spec"]["template_variables"] == {"gpus": 2}
    code = Path(HELLO)
    assert code.exists()
    env_probe = cli("queue", "render", "gpu", "-v", "gpus=3", "-v", "size=large", check=True)
    rendered = json.loads(env_probe.stdout)["config"]["resource_args"]["local-process"]["env"]
    assert rendered == {"NGPU": 3, "SIZE": "size-large"}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("gpus=9", "template variable gpus: value 9 is above the maximum 4"),
        ("gpus=0", "is below the minimum 1"),
        ("gpus=two", "template variable gpus must be an integer"),
        ("size=medium", "'medium' is not one of: small, large"),
        ("color=red", "Queue gpu does not support overriding color"),
        ("gpus", "--set-var expects key=value"),
    ],
)
def test_bad_values_are_refused_with_wandb_wording_and_nothing_is_queued(
    home: Path, pair: str, message: str
) -> None:
    gpu_queue()
    cli("job", "create", "code", HELLO, "-E", "python train.py", check=True)
    before = table_counts(home)
    proc = cli("launch", "-q", "gpu", "-j", "hello", "--set-var", pair)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert table_counts(home) == before


def test_a_field_without_default_must_be_given() -> None:
    config = {
        "resource_args": {"local-process": {"env": {"T": "{{team}}"}}},
        "template_variables": {"team": {"type": "string"}},
    }
    cli("queue", "create", "q", "--config", json.dumps(config), check=True)
    proc = cli("launch", "-q", "q", "-u", HELLO, "-E", "python train.py")
    assert proc.returncode == 1
    assert "needs a value for template variable team" in proc.stderr


def test_set_var_without_a_queue_is_refused() -> None:
    proc = cli("launch", "-u", HELLO, "-E", "python train.py", "-v", "gpus=2")
    assert proc.returncode == 1 and "--set-var (-v) needs --queue (-q)" in proc.stderr


def test_template_commands_list_and_define_fields(tmp_path: Path) -> None:
    cli("queue", "create", "q", "--config",
        '{"resource_args": {"local-process": {"env": {"N": "{{n}}"}}},'
        ' "template_variables": {"n": {"type": "integer"}}}', check=True)  # fmt: skip
    cli("queue", "template", "set", "q", "n", "--type", "integer", "--min", "1", "--max", "8",
        "--default", "2", check=True)  # fmt: skip
    shown = cli_json("queue", "template", "q")
    assert shown == [{"name": "n", "used": True, "defined": True, "type": "integer",
                      "minimum": 1, "maximum": 8, "default": 2}]  # fmt: skip
    defs = tmp_path / "defs.yaml"
    defs.write_text("n:\n  type: integer\n  minimum: 2\n  maximum: 3\n  default: 2\n")
    cli("queue", "template", "set", "q", "--file", str(defs), check=True)
    assert cli_json("queue", "template", "q")[0]["maximum"] == 3
    proc = cli("queue", "template", "unset", "q", "n")
    assert proc.returncode == 1 and "uses {{n}} but has no definition" in proc.stderr
    proc = cli(
        "queue", "template", "set", "q", "n", "--type", "integer", "--min", "5", "--max", "1"
    )
    assert proc.returncode == 1 and "minimum 5 is above maximum 1" in proc.stderr
    assert cli_json("queue", "template", "q")[0]["maximum"] == 3


def test_admin_changing_limits_applies_to_runs_already_queued(store: Store) -> None:
    """A queued value that the queue's current rules refuse never runs: the agent re-checks."""
    gpu_queue()
    run_id = cli("launch", "-q", "gpu", "-u", HELLO, "-E", "python train.py", "-v", "gpus=4",
                 check=True).stdout.strip()  # fmt: skip
    tighter = json.loads(json.dumps(GPU_CONFIG))
    tighter["template_variables"]["gpus"]["maximum"] = 2
    cli("queue", "edit", "gpu", "--config", json.dumps(tighter), check=True)
    cli("agent", "-q", "gpu", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "value 4 is above the maximum 2" in run["reason"]


def test_a_hand_edited_database_row_is_caught_by_the_agent(store: Store, home: Path) -> None:
    import sqlite3

    gpu_queue()
    run_id = cli("launch", "-q", "gpu", "-u", HELLO, "-E", "python train.py", "-v", "gpus=2",
                 check=True).stdout.strip()  # fmt: skip
    conn = sqlite3.connect(home / "launchctl.db")
    spec = json.loads(conn.execute("SELECT spec FROM runs WHERE id = ?", [run_id]).fetchone()[0])
    spec["template_variables"]["gpus"] = 64
    conn.execute("UPDATE runs SET spec = ? WHERE id = ?", [json.dumps(spec), run_id])
    conn.commit()
    conn.close()
    cli("agent", "-q", "gpu", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "value 64 is above the maximum 4" in run["reason"]
    assert "running" not in [e["to_state"] for e in store.runs.events(run_id)]
