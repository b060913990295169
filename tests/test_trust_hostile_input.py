"""Hostile text and hostile runs: what another user on the machine can type or make a run do.

Issue 9, part E: git arguments that read as options, terminal escapes in printed records,
YAML that costs minutes to parse, a run that fills the disk, and an adopted container's log.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import cli, cli_json, make_script, table_counts


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    make_script(repo, "train.py", "print('trained')\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-qm", "one", cwd=repo)
    return repo


def _one_line_refusal(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


# -- git arguments that git would read as options ------------------------------------------


def test_a_git_url_or_hash_that_starts_with_a_dash_is_refused_and_nothing_is_written(
    tmp_path: Path, home: Path
) -> None:
    repo = _repo(tmp_path)
    cli("queue", "list", check=True)  # the store exists: a refusal must leave it as it is
    before = table_counts(home)
    marker = tmp_path / "pwned"
    proc = cli("job", "create", "git", "-E", "python train.py", "--",
               f"--upload-pack=touch {marker};git-upload-pack")  # fmt: skip
    _one_line_refusal(proc, "git URL")
    proc = cli("job", "create", "git", f"file://{repo}", "--git-hash=-bpwned",
               "-E", "python train.py")  # fmt: skip
    _one_line_refusal(proc, "git hash")
    proc = cli("launch", "-u", f"--upload-pack=touch {marker};.git", "-E", "python train.py")
    _one_line_refusal(proc)
    assert table_counts(home) == before
    assert not marker.exists()


def _hand_edit_git_source(home: Path, job: str, **source: str) -> None:
    conn = sqlite3.connect(home / "launchctl.db")
    with conn:
        (version_id, text), *_ = conn.execute(
            "SELECT v.id, v.source FROM job_versions v JOIN jobs j ON v.job_id = j.id"
            " WHERE j.name = ?",
            (job,),
        ).fetchall()
        data = json.loads(text)
        data["git"].update(source)
        conn.execute(
            "UPDATE job_versions SET source = ? WHERE id = ?", (json.dumps(data), version_id)
        )
    conn.close()


def test_a_hand_edited_git_hash_that_reads_as_an_option_fails_the_run_at_the_agent(
    tmp_path: Path, home: Path
) -> None:
    repo = _repo(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-LINE\n")
    cli("job", "create", "git", f"file://{repo}", "-E", "python train.py", "-n", "g", check=True)
    # git checkout --pathspec-from-file=FILE would quote FILE's lines in its error message.
    _hand_edit_git_source(home, "g", commit=f"--pathspec-from-file={secret}")
    proc = cli("launch", "-j", "g")
    assert proc.returncode != 0
    run = cli_json("runs", "list")[0]
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "TOPSECRET" not in json.dumps(cli_json("runs", "show", run["id"]))
    assert "TOPSECRET" not in cli("logs", run["id"]).stdout
    assert "trained" not in cli("logs", run["id"]).stdout


def test_a_hand_edited_git_url_that_reads_as_an_option_fails_the_run_at_the_agent(
    tmp_path: Path, home: Path
) -> None:
    repo = _repo(tmp_path)
    marker = tmp_path / "pwned"
    cli("job", "create", "git", f"file://{repo}", "-E", "python train.py", "-n", "g", check=True)
    _hand_edit_git_source(home, "g", remote=f"--upload-pack=touch {marker};git-upload-pack")
    proc = cli("launch", "-j", "g")
    assert proc.returncode != 0
    run = cli_json("runs", "list")[0]
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "starts with '-'" in run["reason"]
    assert not marker.exists()


# -- terminal escapes in printed records ---------------------------------------------------

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m"
RAW = ("\x1b", "\x07", "\u202e", "\x9b")


def _no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, f"raw {char!r} printed"


def test_terminal_escapes_in_a_hand_edited_run_queue_or_job_are_printed_escaped(
    tmp_path: Path, home: Path
) -> None:
    code = tmp_path / "code"
    make_script(code, "train.py", "print('hi')\n")
    cli("queue", "create", "q", "--description", "plain", check=True)
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "j", check=True)
    run_id = cli("launch", "-q", "q", "-j", "j", check=True).stdout.strip()
    conn = sqlite3.connect(home / "launchctl.db")
    with conn:
        conn.execute(
            "UPDATE runs SET name = ?, reason = ?, stage = 'run', project = ? WHERE id = ?",
            (HOSTILE, HOSTILE, HOSTILE, run_id),
        )
        conn.execute("UPDATE events SET message = ? WHERE run_id = ?", (HOSTILE, run_id))
        conn.execute("UPDATE queues SET description = ? WHERE name = 'q'", (HOSTILE,))
        conn.execute("UPDATE jobs SET project = ?, entity = ? WHERE name = 'j'", (HOSTILE, HOSTILE))
        conn.execute("UPDATE job_versions SET entrypoint = ?", (json.dumps(["python", HOSTILE]),))
    conn.close()

    for args in (
        ("runs", "list"),
        ("runs", "show", run_id),
        ("queue", "list"),
        ("queue", "show", "q"),
        ("job", "list"),
        ("job", "show", "j"),
    ):
        proc = cli(*args, check=True)
        _no_raw_controls(proc.stdout)
        assert "\\x1b]0;pwned\\x07" in proc.stdout, (args, proc.stdout)
        # --json stays valid JSON and keeps the text exactly as stored.
        data = json.loads(cli(*args, "--json", check=True).stdout)
        assert json.dumps(HOSTILE)[1:-1] in json.dumps(data), args
    shown = cli_json("runs", "show", run_id)
    assert shown["name"] == HOSTILE and shown["reason"] == HOSTILE


# -- YAML that costs minutes to parse ----------------------------------------------------


def test_deeply_nested_yaml_is_refused_at_once_and_nothing_is_written(
    tmp_path: Path, home: Path
) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    cases = {
        "sequences.yaml": "[" * 200_000,
        "mappings.yaml": "{" * 200_000,
        "mixed.yaml": "a: " + "[{x: " * 40_000,
        "closed.yaml": "[" * 100_000 + "]" * 100_000,
        "indented.yaml": "".join(" " * i + "a:\n" for i in range(600)),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        # The subprocess timeout is the guard: before the fix these took minutes.
        proc = cli("queue", "create", name.split(".")[0], "--config", str(path), timeout=10)
        _one_line_refusal(proc, "nested too deeply")
    assert table_counts(home) == before
    # A config nested a little is still fine.
    nested = tmp_path / "ok.yaml"
    nested.write_text("resource_args: {local-process: {env: {A: '[[[[{{{{'}}}\n")
    cli("queue", "create", "ok", "--config", str(nested), check=True)
