"""Issue 18: `runs hold` / `runs release` keep a queued run from being claimed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for

ADMIN = {"LAUNCHCTL_USER": "alice"}
MEMBER = {"LAUNCHCTL_USER": "bob"}
OTHER_MEMBER = {"LAUNCHCTL_USER": "carol"}
OUTSIDER = {"LAUNCHCTL_USER": "eve"}


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """alice runs team 'vision' (members bob, carol) and its queue 'vq', and its agents;
    the job 'gate' prints its run id and, when its run config names a file, waits until
    it exists."""
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    cli("team", "create", "vision", env=ADMIN, check=True)
    cli("team", "add", "vision", "bob", env=ADMIN, check=True)
    cli("team", "add", "vision", "carol", env=ADMIN, check=True)
    cli("queue", "create", "vq", "--entity", "vision", env=ADMIN, check=True)
    code = make_script(
        tmp_path / "gate",
        "main.py",
        "import json, os, sys, time\n"
        "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
        "while cfg.get('gate') and not os.path.exists(cfg['gate']):\n"
        "    time.sleep(0.02)\n"
        "print('ran', os.environ['LAUNCHCTL_RUN_ID'])\n"
        "sys.exit(int(cfg.get('exit', 0)))\n",
    ).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "gate", "-e", "vision",
        env=ADMIN, check=True)  # fmt: skip
    return tmp_path


def launch(env: dict[str, str], *args: str) -> str:
    proc = cli("launch", "-q", "vq", "-j", "vision/gate", "--quiet", *args, env=env, check=True)
    assert proc.stderr == ""  # --quiet: the id alone, no notes
    return proc.stdout.strip()


def run(run_id: str) -> dict[str, object]:
    return dict(cli_json("runs", "show", run_id))


def state(run_id: str) -> str:
    return str(run(run_id)["state"])


def test_a_held_run_is_passed_over_until_released(team: Path, start_agent: StartAgent) -> None:
    first = launch(MEMBER)
    proc = cli("runs", "hold", first, env=MEMBER, check=True)
    assert proc.stdout.strip() == f"run {first} held"
    second = launch(MEMBER)
    listed = {r["id"]: r for r in cli_json("runs", "list")}
    assert listed[first]["held"] is True and listed[second]["held"] is False
    table = cli("runs", "list", check=True).stdout
    assert "queued (held)" in next(ln for ln in table.splitlines() if ln.startswith(first))
    shown = cli("runs", "show", first, check=True).stdout
    assert "waits for:  held" in shown and "held by bob" in shown
    # The held run is older: an agent that ignored the hold would claim it first.
    agent = start_agent("-q", "vq")
    wait_for(lambda: state(second) == "finished", what="the run behind the held one")
    assert state(first) == "queued"
    assert first not in agent.output()
    assert cli("runs", "release", first, env=MEMBER, check=True).stdout.strip() == (
        f"run {first} released"
    )
    wait_for(lambda: state(first) == "finished", what="the released run")


def test_holding_twice_changes_nothing_and_says_so(team: Path) -> None:
    run_id = launch(MEMBER)
    cli("runs", "hold", run_id, env=MEMBER, check=True)
    assert f"has not started: held (`launchctl runs release {run_id}`" in cli("logs", run_id).stderr
    events = len(run(run_id)["events"])  # type: ignore[arg-type]
    again = cli("runs", "hold", run_id, env=MEMBER, check=True)
    assert again.stdout.strip() == f"run {run_id} is already held"
    assert len(run(run_id)["events"]) == events  # type: ignore[arg-type]
    proc = cli("runs", "release", run_id, env=MEMBER, check=True)
    assert proc.stdout.strip() == f"run {run_id} released"
    proc = cli("runs", "release", run_id, env=MEMBER, check=True)
    assert proc.stdout.strip() == f"run {run_id} is already not held"


def test_a_claimed_run_cannot_be_held(team: Path, start_agent: StartAgent) -> None:
    gate = team / "open"
    run_id = launch(MEMBER, "--set", f"gate={gate}")
    start_agent("-q", "vq")
    wait_for(lambda: state(run_id) == "running", what="the run to start")
    proc = cli("runs", "hold", run_id, env=MEMBER)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"launchctl: error: run {run_id} is running: only a queued run can be held"
    ]
    assert "Traceback" not in proc.stderr
    gate.touch()
    wait_for(lambda: state(run_id) == "finished", what="the run to end")
    proc = cli("runs", "release", run_id, env=MEMBER)
    assert proc.returncode == 1 and "is finished: only a queued run can be released" in proc.stderr


@pytest.mark.parametrize("who", [OUTSIDER, OTHER_MEMBER])
def test_only_the_author_or_an_admin_may_hold_or_release(
    team: Path, home: Path, who: dict[str, str]
) -> None:
    """Another user may neither hold a labmate's run (to keep it from starting) nor release
    one its author held (to let it start); nothing is written when refused."""
    run_id = launch(MEMBER)
    before = table_counts(home)
    for verb in ("hold", "release"):
        proc = cli("runs", verb, run_id, env=who)
        assert proc.returncode == 1
        assert f"may not {verb} run {run_id}: only its author ('bob')" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert table_counts(home) == before
    cli("runs", "hold", run_id, env=MEMBER, check=True)
    proc = cli("runs", "release", run_id, env=who)
    assert proc.returncode == 1 and run(run_id)["held"] is True
    # An admin of the run's entity may, as with `runs cancel`.
    cli("runs", "release", run_id, env=ADMIN, check=True)
    assert run(run_id)["held"] is False
    cli("runs", "hold", run_id, env=ADMIN, check=True)
    assert "held by alice" in json.dumps(run(run_id)["events"])


def test_a_held_run_can_be_cancelled(team: Path) -> None:
    run_id = launch(MEMBER)
    cli("runs", "hold", run_id, env=MEMBER, check=True)
    cli("runs", "cancel", run_id, env=MEMBER, check=True)
    assert state(run_id) == "stopped"
    assert "waits for" not in cli("runs", "show", run_id, check=True).stdout


def test_an_unknown_run_is_refused_in_one_line(home: Path) -> None:
    proc = cli("runs", "hold", "nosuchrun")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "launchctl: error: run 'nosuchrun' does not exist (see `launchctl runs list`)"
    ]
