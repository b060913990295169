"""Macros, as W&B documents them: built-ins, then the agent's environment; strings only."""

from __future__ import annotations

import json
from pathlib import Path

from launchctl import macros
from launchctl.store import Store
from tests.conftest import cli, make_script

RUN = {"id": "abc12345", "name": "resnet-abc1", "project": "vision", "entity": "lab"}


def test_builtins_come_first_then_the_agent_environment() -> None:
    config = {
        "metadata": {"labels": {"run": "${run_id}", "who": "${entity_name}/${project_name}"}},
        "containers": [{"image": "${image_uri}", "env": [{"name": "X", "value": "${MY_ENV_VAR}"}]}],
        "name": "${run_name}",
    }
    env = {"MY_ENV_VAR": "from-env", "run_id": "env-must-not-win"}
    out = macros.expand(config, macros.builtins_for(RUN, "reg:5000/img:1"), env)
    assert out == {
        "metadata": {"labels": {"run": "abc12345", "who": "lab/vision"}},
        "containers": [{"image": "reg:5000/img:1", "env": [{"name": "X", "value": "from-env"}]}],
        "name": "resnet-abc1",
    }


def test_keys_and_non_strings_are_untouched_and_unknown_names_stay_as_written() -> None:
    unknown: set[str] = set()
    out = macros.expand(
        {"${run_id}": "${NOPE}", "n": 3, "flag": True, "list": ["${run_id}", 1.5, None]},
        macros.builtins_for(RUN), {}, unknown,
    )  # fmt: skip
    assert out == {"${run_id}": "${NOPE}", "n": 3, "flag": True, "list": ["abc12345", 1.5, None]}
    assert unknown == {"NOPE"}


def test_only_word_characters_make_a_macro() -> None:
    out = macros.expand(
        ["${a-b}", "$run_id", "${ run_id }", "${run_id}"], macros.builtins_for(RUN), {}
    )
    assert out == ["${a-b}", "$run_id", "${ run_id }", "abc12345"]


def test_the_run_sees_its_macros_and_unknown_ones_are_a_warning_on_the_run(
    store: Store, tmp_path: Path
) -> None:
    script = "import os\nprint(os.environ['WHO'], os.environ['ODD'])\n"
    code = make_script(tmp_path / "show", "main.py", script).parent
    config = {"resource_args": {"local-process": {"env": {
        "WHO": "${run_name}@${project_name}:${AGENT_SITE}", "ODD": "${NOT_SET_ANYWHERE}",
    }}}}  # fmt: skip
    cli("queue", "create", "m", "--config", json.dumps(config), check=True)
    run_id = cli("launch", "-q", "m", "-u", str(code), "-E", "python main.py", "-p", "proj",
                 "--name", "nice", check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "m", "--burst", env={"AGENT_SITE": "lab-7"}, check=True)
    assert cli("logs", run_id, check=True).stdout.strip() == "nice@proj:lab-7 ${NOT_SET_ANYWHERE}"
    notes = [e["message"] for e in store.runs.events(run_id) if e["from_state"] == e["to_state"]]
    assert notes == ["warning: unknown macro ${NOT_SET_ANYWHERE} left as written"]
    assert "warning: unknown macro" in cli("runs", "show", run_id, check=True).stdout


def test_queue_render_is_a_dry_run_of_templates_and_macros() -> None:
    config = {
        "resource_args": {
            "local-process": {"env": {"N": "{{n}}", "H": "${HOME_SITE}", "R": "${run_id}"}}
        },
        "template_variables": {"n": {"type": "integer", "default": 1}},
    }
    cli("queue", "create", "r", "--config", json.dumps(config), check=True)
    out = json.loads(
        cli("queue", "render", "r", "-v", "n=3", env={"HOME_SITE": "x"}, check=True).stdout
    )
    assert out["config"]["resource_args"]["local-process"]["env"] == {
        "N": 3,
        "H": "x",
        "R": "${run_id}",
    }
    assert out["unresolved_macros"] == ["run_id"]
