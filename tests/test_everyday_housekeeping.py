"""Issue 12 item 6: deleting and pruning runs (with their files, saying how much space
came back), deleting jobs no run needs, and the images launchctl built. Nothing touches
a run that has not ended; roles decide who may delete whose runs."""

from __future__ import annotations

import time
from pathlib import Path

from launchctl.store import Store
from tests.conftest import EXAMPLES, cli, cli_json

HELLO = str(EXAMPLES / "hello")
EVE = {"LAUNCHCTL_USER": "eve"}


def _direct(*extra: str, env: dict[str, str] | None = None) -> str:
    """A direct launch: runs to its end before the command returns."""
    proc = cli("launch", "-u", HELLO, "-E", "python train.py", *extra, env=env)
    run = cli_json("runs", "list", "-n", "1")[0]
    assert run["state"] == "finished", proc.stderr
    return str(run["id"])


def _queued() -> str:
    return cli(
        "launch", "-q", "default", "-u", HELLO, "-E", "python train.py", check=True
    ).stdout.strip()


def _ids() -> set[str]:
    return {r["id"] for r in cli_json("runs", "list", "-n", "0")}


def test_runs_delete_removes_the_run_its_log_and_folder_and_says_what_came_back(
    home: Path,
) -> None:
    run = _direct()
    folder = home / "runs" / run
    assert (folder / "output.log").exists()
    (folder / "big.bin").write_bytes(b"x" * 300_000)
    proc = cli("runs", "delete", run, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 1 run" in proc.stdout and "KB freed" in proc.stdout
    freed_kb = float(proc.stdout.split(",")[1].split()[0])
    assert 300 <= freed_kb < 400
    assert not folder.exists()
    assert run not in _ids()
    assert cli("runs", "show", run).returncode == 1


def test_runs_delete_asks_first_and_refuses_without_a_terminal_or_yes(home: Path) -> None:
    run = _direct()
    proc = cli("runs", "delete", run, input="y\n")  # stdin is a pipe, not a terminal
    assert proc.returncode == 1
    assert "pass --yes" in proc.stderr and proc.stderr.count("\n") == 1
    assert run in _ids() and (home / "runs" / run).exists()


def test_runs_delete_never_touches_a_queued_run_and_deletes_nothing_then(home: Path) -> None:
    done = _direct()
    waiting = _queued()
    proc = cli("runs", "delete", done, waiting, "--yes")
    assert proc.returncode == 1
    assert f"run {waiting} is queued" in proc.stderr and "runs cancel" in proc.stderr
    assert {done, waiting} <= _ids()
    assert (home / "runs" / done).exists()


def test_another_user_may_not_delete_your_runs(home: Path) -> None:
    run = _direct()
    proc = cli("runs", "delete", run, "--yes", env=EVE)
    assert proc.returncode == 1
    assert "user 'eve' may not delete run" in proc.stderr
    # making a team of their own does not help
    cli("team", "create", "evil", env=EVE, check=True)
    assert cli("runs", "delete", run, "--yes", env=EVE).returncode == 1
    proc = cli("runs", "prune", "--yes", env=EVE)
    assert proc.returncode == 0 and f"skipping run {run}" in proc.stderr
    assert run in _ids() and (home / "runs" / run).exists()


def test_a_forged_log_path_outside_the_home_is_never_removed(
    store: Store, home: Path, tmp_path: Path
) -> None:
    run = _direct()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    store.runs.update(run, log_path=str(victim), workdir=str(tmp_path))
    assert cli("runs", "delete", run, "--yes").returncode == 0
    assert victim.read_text() == "keep me"
    assert not (home / "runs" / run).exists()


def test_runs_prune_by_age_and_state_keeps_queued_and_recent_runs(store: Store, home: Path) -> None:
    old_ok = _direct()
    old_failed = _direct("--set", "x=1")
    new_ok = _direct()
    waiting = _queued()
    stopped = _queued()
    cli("runs", "cancel", stopped, check=True)
    week_ago = time.time() - 7 * 86400
    with store.db.write():
        store.db.execute(
            "UPDATE runs SET ended_at = ?, created_at = ? WHERE id IN (?, ?, ?)",
            [week_ago, week_ago, old_ok, old_failed, waiting],
        )
        store.db.execute("UPDATE runs SET state = 'failed' WHERE id = ?", [old_failed])
    proc = cli("runs", "prune", "--older-than", "3d", "--state", "failed", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 1 run," in proc.stdout
    assert _ids() == {old_ok, new_ok, waiting, stopped}
    proc = cli("runs", "prune", "--older-than", "3d", "--yes")
    assert "deleted 1 run," in proc.stdout
    assert _ids() == {new_ok, waiting, stopped}
    assert not (home / "runs" / old_ok).exists() and (home / "runs" / new_ok).exists()
    proc = cli("runs", "prune", "--yes")
    assert "deleted 2 runs," in proc.stdout
    assert _ids() == {waiting}
    assert cli("runs", "prune", "--yes").stdout.strip() == "no runs to prune"


def test_runs_prune_refuses_bad_input_before_creating_anything(home: Path) -> None:
    for args, words in (
        (["--state", "queued"], "ended runs only: state 'queued'"),
        (["--state", "finished,running"], "state 'running'"),
        (["--older-than", "30"], "invalid --older-than value '30'"),
        (["--older-than", "soon"], "invalid --older-than"),
    ):
        proc = cli("runs", "prune", "--yes", *args)
        assert proc.returncode == 1, args
        assert words in proc.stderr and proc.stderr.count("\n") == 1
        assert not (home / "launchctl.db").exists()


def _job(tmp_path: Path, name: str, body: str) -> None:
    code = tmp_path / name
    code.mkdir(exist_ok=True)
    (code / "main.py").write_text(body)
    cli("job", "create", "code", str(code), "-n", name, "-E", "python main.py", check=True)


def test_job_delete_refuses_while_runs_need_it_unless_forced(tmp_path: Path) -> None:
    _job(tmp_path, "train", "print(1)\n")
    _job(tmp_path, "train", "print(2)\n")
    assert [j["versions"] for j in cli_json("job", "list")] == [2]
    waiting = cli("launch", "-q", "default", "-j", "train:v0", check=True).stdout.strip()
    proc = cli("job", "delete", "train:v0", "--yes", "--force")
    assert proc.returncode == 1
    assert f"needed by run {waiting} (queued)" in proc.stderr  # even forced
    cli("runs", "cancel", waiting, check=True)
    proc = cli("job", "delete", "train:v0", "--yes")
    assert proc.returncode == 1
    assert "needed by 1 ended run" in proc.stderr and "--force" in proc.stderr
    proc = cli("job", "delete", "train:v0", "--yes", "--force")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deleted root/train:v0 (1 version,")
    (job,) = cli_json("job", "list")
    assert job["versions"] == 1 and job["latest"] == 1
    assert cli("job", "show", "train:v0").returncode == 1
    # the stopped run keeps its record
    assert cli_json("runs", "show", waiting)["state"] == "stopped"
    # ...but not its code: a rerun is refused (as `launch -j train:v0` is), not queued to
    # run in an empty folder; `rerun --failed` skips such a run saying why
    proc = cli("runs", "rerun", waiting)
    assert proc.returncode == 1 and proc.stderr == (
        f"launchctl: error: run {waiting}'s job root/train:v0 was deleted (the run kept its"
        " record): launch the job again to run it\n"
    )
    assert [r["id"] for r in cli_json("runs", "list", "-n", "0")] == [waiting]
    # a job no run needs goes whole, its code with it
    proc = cli("job", "delete", "train", "--yes")
    assert proc.returncode == 0 and "1 version" in proc.stdout and "of code freed" in proc.stdout
    assert cli_json("job", "list") == []


def test_job_delete_asks_first_and_only_admins_or_authors_may(tmp_path: Path, store: Store) -> None:
    _job(tmp_path, "train", "print(1)\n")
    proc = cli("job", "delete", "train")  # no terminal, no --yes
    assert proc.returncode == 1 and "pass --yes" in proc.stderr
    proc = cli("job", "delete", "root/train", "--yes", env=EVE)
    assert proc.returncode == 1 and "user 'eve' may not delete" in proc.stderr
    assert len(cli_json("job", "list")) == 1
    assert store.db.one("SELECT COUNT(*) AS n FROM snapshots")["n"] == 1  # type: ignore[index]
    assert cli("job", "delete", "nope", "--yes").returncode == 1
