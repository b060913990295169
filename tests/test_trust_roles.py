"""Trust on a shared machine (issue 9, part D): names, macros and roles.

Each test plays the attack from the outside: the real CLI, as two users of one machine
(``LAUNCHCTL_USER=alice`` administers the team, ``bob`` is a member, ``mallory`` is not).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import (
    BUSYBOX,
    EXAMPLES,
    StartAgent,
    cli,
    make_script,
    table_counts,
    wait_for,
)

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
MALLORY = {"LAUNCHCTL_USER": "mallory"}
HELLO = str(EXAMPLES / "hello")


def team() -> None:
    """alice administers entity 'vision'; bob is a member of it."""
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)


def queue(name: str, resource: str, config: dict[str, Any]) -> None:
    cli("queue", "create", name, "--entity", "vision", "--resource", resource,
        "--config", json.dumps(config), env=ALICE, check=True)  # fmt: skip


def one_line_error(proc: Any) -> str:
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(proc.stderr)


def edit_run(home: Path, run_id: str, **columns: Any) -> None:
    """Change a stored run by hand, as anyone who can write the database could."""
    conn = sqlite3.connect(home / "launchctl.db")
    sets = ", ".join(f"{k} = ?" for k in columns)
    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*columns.values(), run_id])
    conn.commit()
    conn.close()


# -- finding 4: names never become paths --------------------------------------------------


@pytest.fixture
def project_box(tmp_path: Path) -> Path:
    """A container queue of 'vision' that mounts each project's own folder at /data."""
    projects = tmp_path / "projects"
    (projects / "cats").mkdir(parents=True)
    (projects / "cats" / "marker").write_text("cats data\n")
    team()
    volume = f"{projects}/${{project_name}}:/data"
    queue(
        "vision-box",
        "local-container",
        {"resource_args": {"local-container": {"volume": [volume]}}},
    )
    return projects


def test_a_project_name_that_climbs_out_of_the_queues_volume_is_refused_at_launch(
    project_box: Path, home: Path
) -> None:
    before = table_counts(home)
    proc = cli("launch", "-q", "vision-box", "-d", BUSYBOX, "-E", "ls /data",
               "-p", "../../../../etc", env=BOB)  # fmt: skip
    err = one_line_error(proc)
    assert proc.returncode == 1
    assert "invalid project name '../../../../etc': it must not start with '.'" in err
    assert table_counts(home) == before


BAD_NAMES = {
    "slash": "a/b",
    "backslash": "a\\b",
    "leading-dot": ".hidden",
    "dot-dot": "..",
    "control": "a\x1bb",
    "trailing-newline": "vision\n",
    "too-long": "x" * 200,
}


@pytest.mark.parametrize("flag", ["-p", "-e", "--name"])
@pytest.mark.parametrize("bad", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_launch_refuses_names_that_could_become_paths(flag: str, bad: str, home: Path) -> None:
    team()
    queue("vision-cpu", "local-process", {})
    before = table_counts(home)
    proc = cli("launch", "-q", "vision-cpu", "-u", HELLO, "-E", "python train.py", flag, bad,
               env=BOB)  # fmt: skip
    err = one_line_error(proc)
    what = {"-p": "project", "-e": "entity", "--name": "run"}[flag]
    assert f"invalid {what} name" in err
    assert table_counts(home) == before


@pytest.mark.parametrize("bad", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_job_create_refuses_names_that_could_become_paths(
    bad: str, home: Path, tmp_path: Path
) -> None:
    code = make_script(tmp_path / "code", "main.py", "print('hi')\n").parent
    cli("job", "list", check=True)  # the store exists: a refusal must add nothing to it
    before = table_counts(home)
    proc = cli("job", "create", "code", str(code), "-E", "python main.py", "-n", bad, env=ALICE)
    assert "invalid job name" in one_line_error(proc)
    assert table_counts(home) == before


def test_a_run_name_may_hold_spaces_as_w_and_b_s_may(home: Path) -> None:
    team()
    queue("vision-cpu", "local-process", {})
    proc = cli("launch", "-q", "vision-cpu", "-u", HELLO, "-E", "python train.py",
               "--name", "lr sweep #3: 0.1", "--json", env=BOB, check=True)  # fmt: skip
    run = json.loads(proc.stdout)
    assert run["name"] == "lr sweep #3: 0.1"


def test_a_hand_edited_project_fails_at_the_agent_without_a_container(
    project_box: Path, home: Path, store: Store, docker: Any
) -> None:
    run_id = cli("launch", "-q", "vision-box", "-d", BUSYBOX, "-E", "ls /data", "-p", "cats",
                 env=BOB, check=True).stdout.strip()  # fmt: skip
    edit_run(home, run_id, project="../..")
    cli("agent", "-q", "vision-box", "--burst", env=ALICE, check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "invalid project name '../..'" in run["reason"]
    states = [e["to_state"] for e in store.runs.events(run_id)]
    assert "starting" not in states and "running" not in states
    assert docker.containers.list(all=True, filters={"label": f"launchctl.run_id={run_id}"}) == []


def test_the_project_folder_is_mounted_for_a_valid_name(
    project_box: Path, store: Store, docker: Any
) -> None:
    run_id = cli("launch", "-q", "vision-box", "-d", BUSYBOX, "-E", "cat /data/marker",
                 "-p", "cats", env=BOB, check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "vision-box", "--burst", env=ALICE, check=True)
    assert store.runs.get(run_id)["state"] == "finished"
    assert cli("logs", run_id, check=True).stdout == "cats data\n"


def test_a_template_value_that_leaves_the_volumes_folder_is_refused(
    tmp_path: Path, home: Path
) -> None:
    team()
    volume = f"{tmp_path}/datasets/{{{{dataset}}}}:/data:ro"
    queue("vision-data", "local-container", {
        "resource_args": {"local-container": {"volume": [volume]}},
        "template_variables": {"dataset": {"type": "string", "default": "imagenet"}},
    })  # fmt: skip
    before = table_counts(home)
    for bad in ("../../../etc", "imagenet/../../x", "x:/host:rw"):
        proc = cli("launch", "-q", "vision-data", "-d", BUSYBOX, "-E", "ls /data",
                   "-v", f"dataset={bad}", env=BOB)  # fmt: skip
        err = one_line_error(proc)
        assert proc.returncode == 1 and "the queue's admin wrote" in err, bad
        assert ("leaves the folder" in err) != (":" in bad), err
    assert table_counts(home) == before
    cli("launch", "-q", "vision-data", "-d", BUSYBOX, "-E", "ls /data", "-v",
        "dataset=imagenet/train", env=BOB, check=True)  # fmt: skip


# -- finding 6: a launcher's text is data, never a macro ----------------------------------

SHOW_ENV = (
    "import os\n"
    "for key in ('TAG', 'NAMED', 'SITE', 'WANDB_CONFIG', 'WANDB_NAME'):\n"
    "    print(key, '=', os.environ.get(key))\n"
)


def test_a_members_values_never_expand_the_agents_environment(tmp_path: Path, store: Store) -> None:
    team()
    queue("vision-cpu", "local-process", {
        "resource_args": {"local-process": {"env": {
            "TAG": "{{tag}}", "NAMED": "run ${run_name}", "SITE": "${AGENT_SITE_TEST}",
        }}},
        "template_variables": {"tag": {"type": "string", "default": "none"}},
    })  # fmt: skip
    code = make_script(tmp_path / "show", "show.py", SHOW_ENV).parent
    cli("job", "create", "code", str(code), "-E", "python show.py", "-n", "show", "-e", "vision",
        env=ALICE, check=True)  # fmt: skip
    run_id = cli("launch", "-q", "vision-cpu", "-j", "show", "-v", "tag=${AGENT_SECRET_TEST}",
                 "--set", "x=${AGENT_SECRET_TEST}", "--name", "n-${AGENT_SECRET_TEST}",
                 env=BOB, check=True).stdout.strip()  # fmt: skip
    agent_env = {**ALICE, "AGENT_SECRET_TEST": "s3cr3t", "AGENT_SITE_TEST": "lab-7"}
    cli("agent", "-q", "vision-cpu", "--burst", env=agent_env, check=True)
    assert store.runs.get(run_id)["state"] == "finished"
    log = cli("logs", run_id, check=True).stdout
    assert "TAG = ${AGENT_SECRET_TEST}\n" in log
    assert "NAMED = run n-${AGENT_SECRET_TEST}\n" in log
    assert 'WANDB_CONFIG = {"x": "${AGENT_SECRET_TEST}"}\n' in log
    assert "SITE = lab-7\n" in log  # a macro the admin wrote still expands
    assert "s3cr3t" not in log


def test_a_template_value_cannot_become_a_macro_by_splitting_one(
    tmp_path: Path, store: Store
) -> None:
    """The admin wrote ``${{{tag}}}``: the value lands between ``${`` and ``}``, and what it
    makes is left as written, not read as a macro."""
    team()
    queue("vision-cpu", "local-process", {
        "resource_args": {"local-process": {"env": {"TAG": "${{{tag}}}"}}},
        "template_variables": {"tag": {"type": "string", "default": "none"}},
    })  # fmt: skip
    code = make_script(tmp_path / "show", "show.py", SHOW_ENV).parent
    cli("job", "create", "code", str(code), "-E", "python show.py", "-n", "show", "-e", "vision",
        env=ALICE, check=True)  # fmt: skip
    run_id = cli("launch", "-q", "vision-cpu", "-j", "show", "-v", "tag=AGENT_SECRET_TEST",
                 env=BOB, check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "vision-cpu", "--burst", env={**ALICE, "AGENT_SECRET_TEST": "s3cr3t"},
        check=True)  # fmt: skip
    log = cli("logs", run_id, check=True).stdout
    assert "TAG = ${AGENT_SECRET_TEST}\n" in log and "s3cr3t" not in log


# -- finding 8: cancel and agents check roles ---------------------------------------------


def cpu_queue() -> None:
    team()
    queue("vision-cpu", "local-process", {})


def launch_as(who: dict[str, str], *args: str) -> str:
    proc = cli("launch", "-q", "vision-cpu", "-u", HELLO, "-E", "python train.py", *args, env=who,
               check=True)  # fmt: skip
    return proc.stdout.strip()


def test_a_member_cannot_cancel_another_users_run(home: Path, store: Store) -> None:
    cpu_queue()
    run_id = launch_as(ALICE)
    before = table_counts(home)
    for who, user in ((BOB, "bob"), (MALLORY, "mallory")):
        err = one_line_error(cli("runs", "cancel", run_id, env=who))
        assert f"user '{user}' may not cancel run {run_id}" in err
        assert "only its author ('alice') or an admin of entity" in err and "'vision'" in err
    assert table_counts(home) == before
    assert store.runs.get(run_id)["state"] == "queued"
    # Its author may.
    assert cli("runs", "cancel", run_id, env=ALICE, check=True).stdout == f"run {run_id} stopped\n"
    run = store.runs.get(run_id)
    assert (run["state"], run["reason"]) == ("stopped", "cancelled")
    assert "cancelled by alice" in cli("runs", "show", run_id, check=True).stdout


def test_an_admin_of_the_runs_entity_may_cancel_a_members_run(store: Store) -> None:
    cpu_queue()
    theirs, mine = launch_as(BOB), launch_as(BOB)
    cli("runs", "cancel", theirs, env=ALICE, check=True)
    cli("runs", "cancel", mine, env=BOB, check=True)
    assert store.runs.get(theirs)["state"] == store.runs.get(mine)["state"] == "stopped"
    assert "cancelled by alice" in cli("runs", "show", theirs, check=True).stdout
    assert "cancelled by bob" in cli("runs", "show", mine, check=True).stdout


def test_cancelling_a_running_run_records_who_asked(
    store: Store, monkeypatch: pytest.MonkeyPatch, start_agent: StartAgent
) -> None:
    cpu_queue()
    run_id = launch_as(BOB, "--set", "sleep=60")
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    start_agent("-q", "vision-cpu", "--grace", "2")
    wait_for(lambda: store.runs.state(run_id) == "running", what="the run to start")
    assert "stopping it" in cli("runs", "cancel", run_id, env=ALICE, check=True).stdout
    wait_for(lambda: store.runs.state(run_id) == "stopped", what="the run to stop")
    shown = cli("runs", "show", run_id, check=True).stdout
    assert "cancelled by alice; its agent stops it" in shown


def test_only_a_member_may_serve_a_teams_queue(home: Path, store: Store) -> None:
    cpu_queue()
    run_id = launch_as(BOB)
    before = table_counts(home)
    proc = cli("agent", "-q", "vision-cpu", "--burst", env=MALLORY)
    err = one_line_error(proc)
    assert "user 'mallory' is not a member of entity 'vision'" in err
    assert "only members may serve queue vision-cpu of 'vision'" in err
    assert table_counts(home) == before and store.runs.get(run_id)["state"] == "queued"
    # A service account runs the agent under a member's name.
    cli("agent", "-q", "vision-cpu", "--burst", env=BOB, check=True)
    assert store.runs.get(run_id)["state"] == "finished"


def test_a_rerun_is_the_rerunning_users_launch(home: Path, store: Store) -> None:
    cpu_queue()
    plain = launch_as(ALICE)
    tuned = launch_as(ALICE, "-R", '{"local-process": {"env": {"X": "1"}}}')
    before = table_counts(home)
    err = one_line_error(cli("runs", "rerun", tuned, env=BOB))
    assert "user 'bob' is a member of entity 'vision', not an admin" in err
    err = one_line_error(cli("runs", "rerun", plain, env=MALLORY))
    assert "user 'mallory' is not a member of entity 'vision'" in err
    assert table_counts(home) == before
    new = json.loads(cli("runs", "rerun", plain, "--json", env=BOB, check=True).stdout)
    assert new["spec"]["author"] == "bob" and new["rerun_of"] == plain
