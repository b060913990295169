"""`launchctl sync` and `launchctl sync status` as a user meets them (issue 13): help with an
example, refusals in one line that write nothing, bad credentials, --dry-run, --json, and
the API key kept out of every output and the store."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, make_script, table_counts
from tests.sync.standin import WandbStandIn

FAST = {"LAUNCHCTL_SYNC_RETRIES": "0", "LAUNCHCTL_SYNC_BACKOFF": "0.01",
        "LAUNCHCTL_SYNC_TIMEOUT": "5"}  # fmt: skip


def env(server: WandbStandIn, **extra: str) -> dict[str, str]:
    return {**server.env(), **FAST, **extra}


def one_run(tmp_path: Path, text: str = "hello") -> str:
    folder = tmp_path / "job"
    make_script(folder, "main.py", f"print({text!r})\n")
    cli("launch", "-u", str(folder), "-E", "python main.py", "-p", "proj", check=True)
    return str(json.loads(cli("runs", "list", "--json", "-n", "1", check=True).stdout)[0]["id"])


def test_help_shows_the_flags_and_an_example() -> None:
    out = cli("sync", "--help", check=True).stdout
    for flag in ("--base-url", "--entity", "--project", "--dry-run", "--since", "--json"):
        assert flag in out
    assert "Example:" in out and "launchctl sync --base-url" in out
    assert "status" in out and "config" in out
    status = cli("sync", "status", "--help", check=True).stdout
    assert "Example:" in status and "launchctl sync status" in status


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "yesterday"], "invalid --since value"),
        (["--entity", "a/b"], "invalid entity name"),
        (["--project", ""], "invalid project name"),
        (["--base-url", "ftp://x"], "ftp://x"),
        (["status", "--since", "3x"], "invalid --since value"),
    ],
)
def test_bad_flags_are_refused_in_one_line_and_nothing_is_sent(
    tmp_path: Path, wandb_server: WandbStandIn, args: list[str], words: str
) -> None:
    one_run(tmp_path)
    before = table_counts(tmp_path / "home")
    proc = cli("sync", *args, env=env(wandb_server))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert wandb_server.requests == []
    assert table_counts(tmp_path / "home") == before


def test_a_wrong_key_is_one_line_exit_1_and_never_shows_a_key(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    one_run(tmp_path)
    wrong = "f" * 40
    proc = cli("sync", env=env(wandb_server, WANDB_API_KEY=wrong))
    assert proc.returncode == 1
    assert proc.stderr.startswith("launchctl: error: ") and proc.stderr.count("\n") == 1
    assert wrong not in proc.stderr + proc.stdout
    assert [r.op for r in wandb_server.requests] == ["Viewer"]  # nothing of the run went out
    owed = json.loads(cli("sync", "status", "--json", env=env(wandb_server)).stdout)["owed"]
    assert len(owed) == 1


def test_no_key_at_all_says_how_to_give_one(tmp_path: Path, wandb_server: WandbStandIn) -> None:
    one_run(tmp_path)
    proc = cli("sync", env={**FAST, "WANDB_BASE_URL": wandb_server.url})
    assert proc.returncode == 1
    assert "WANDB_API_KEY" in proc.stderr and proc.stderr.count("\n") == 1


def test_dry_run_sends_nothing_and_changes_nothing(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    run_id = one_run(tmp_path)
    before = table_counts(tmp_path / "home")
    proc = cli("sync", "--dry-run", env=env(wandb_server))
    assert proc.returncode == 0, proc.stderr
    assert run_id in proc.stdout and "would send upsert, metadata, log, summary, complete" in (
        proc.stdout
    )
    assert "nothing was sent" in proc.stdout
    assert wandb_server.requests == []
    assert table_counts(tmp_path / "home") == before
    # A dry run needs no key: it reads the store only.
    assert cli("sync", "--dry-run", env={"WANDB_BASE_URL": wandb_server.url}).returncode == 0


def test_json_reports_what_was_sent_per_run_and_never_the_key(
    tmp_path: Path, wandb_server: WandbStandIn, home: Path
) -> None:
    run_id = one_run(tmp_path, "line of output")
    proc = cli("sync", "--json", env=env(wandb_server))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["offline"] is None and report["dry_run"] is False
    assert report["base_url"] == wandb_server.url
    [sent] = report["sent"]
    assert sent["run"] == run_id and sent["step"] == "runs"
    assert sent["sent"] == ["upsert", "metadata", "log", "summary", "complete"]
    assert sent["remote"].endswith(f"/proj/{run_id}") and sent["state"] == "finished"
    assert sent["bytes"] > 0 and sent["requests"] == 4  # the summary and complete ride with the log
    key = wandb_server.api_key
    assert key not in proc.stdout + proc.stderr
    for path in home.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    status = cli("sync", "status", "--json", env=env(wandb_server))
    assert key not in status.stdout and json.loads(status.stdout)["owed"] == []


def test_status_shows_what_is_owed_per_run(tmp_path: Path, wandb_server: WandbStandIn) -> None:
    run_id = one_run(tmp_path)
    proc = cli("sync", "status", env=env(wandb_server))
    assert proc.returncode == 0, proc.stderr
    assert run_id in proc.stdout
    assert "upsert, metadata, 1 log line (6 B), summary, complete" in proc.stdout
    assert "1 run waits to be sent" in proc.stdout
    assert wandb_server.requests == []
    owed = json.loads(cli("sync", "status", "--json", env=env(wandb_server)).stdout)["owed"]
    assert owed[0]["owed"] == ["upsert", "metadata", "log", "summary", "complete"]
    assert owed[0]["log_lines"] == 1 and owed[0]["bytes"] == 6


def test_a_quiet_sync_through_a_pipe_prints_no_progress(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    for n in range(3):
        folder = tmp_path / f"j{n}"
        make_script(folder, "main.py", "print('x')\n")
        cli("launch", "-u", str(folder), "-E", "python main.py", check=True)
    proc = cli("sync", env=env(wandb_server))
    assert proc.returncode == 0 and proc.stderr == ""
    assert "synced 3 runs" in proc.stdout


def test_a_control_character_in_a_flag_is_shown_escaped(tmp_path: Path) -> None:
    one_run(tmp_path)
    proc = cli("sync", "status", "--project", "p\x1b[2Jx", env={"WANDB_BASE_URL": "http://x"})
    assert proc.returncode == 1 and "\x1b" not in proc.stderr


def test_on_a_terminal_progress_counts_the_runs_and_bytes(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    for n in range(3):
        folder = tmp_path / f"j{n}"
        make_script(folder, "main.py", "print('x')\n")
        cli("launch", "-u", str(folder), "-E", "python main.py", check=True)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "launchctl", "sync"],
            stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60,
            env={**os.environ, **env(wandb_server)},
        )  # fmt: skip
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = shown.decode()
    assert "syncing: 1/3 items" in text and "syncing: 3/3 items" in text and " sent" in text
    assert "synced 3 runs" in proc.stdout
