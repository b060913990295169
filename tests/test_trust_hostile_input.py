"""Hostile text and hostile runs: what another user on the machine can type or make a run do.

Issue 9, part E: git arguments that read as options, terminal escapes in printed records,
YAML that costs minutes to parse, a run that fills the disk, and an adopted container's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BUSYBOX,
    AgentProcess,
    StartAgent,
    cli,
    cli_json,
    git,
    make_script,
    table_counts,
    wait_for,
)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    make_script(repo, "train.py", "print('trained')\n")
    git("add", ".", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
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


# -- a run that fills the disk -------------------------------------------------------------

# Writes without end, and ignores its own write errors: only its log copier can stop it.
FLOOD = """
import sys
while True:
    try:
        sys.stdout.write("x" * 8191 + "\\n")
        sys.stdout.flush()
    except OSError:
        pass
"""
# Waits for a file, then says so and ends well.
WAIT = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("waited", flush=True)
"""


@pytest.fixture
def small_disk() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a small tmpfs (a disk that fills up) at a folder; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        _kill_runs_under(path)  # a run its agent left behind (a test that failed)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def _kill_runs_under(path: Path) -> None:
    """Kill the process groups of processes working in ``path`` (this test's runs only)."""
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            group = os.getpgid(int(entry.name))
        except OSError:
            continue
        if cwd.startswith(f"{path}/") and group != os.getpgid(0):
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)


def _state(run_id: str) -> str:
    return str(cli_json("runs", "show", run_id)["state"])


def _launch(queue: str, code: Path, entry: str) -> str:
    return cli("launch", "-q", queue, "-u", str(code), "-E", entry, check=True).stdout.strip()


def _flood_while_another_run_waits(
    tmp_path: Path, start_agent: StartAgent, resource: str = "local-process", *config: str
) -> tuple[AgentProcess, str]:
    """An agent serving two queues: a run waits in one, and a run floods its log in the other.

    Returns the agent and the waiting run, once the flood has failed as "disk full"."""
    cli("queue", "create", "flood", "-r", resource, *config, check=True)
    cli("queue", "create", "other", check=True)
    code = tmp_path / "job"
    make_script(code, "flood.py", FLOOD)
    make_script(code, "wait.py", WAIT)
    agent = start_agent("-q", "flood", "-q", "other", "-j", "2")
    waiting = _launch("other", code, f"python wait.py {tmp_path / 'go'}")
    wait_for(lambda: _state(waiting) == "running", what="the waiting run to start")
    if resource == "local-process":
        flood = _launch("flood", code, "python flood.py")
    else:  # a container that writes without end
        flood = cli("launch", "-q", "flood", "-d", BUSYBOX, "-E", "yes " + "x" * 500,
                    check=True).stdout.strip()  # fmt: skip
    wait_for(lambda: _state(flood) not in ("queued", "claimed", "starting", "running"),
             timeout=60, what="the flooding run to end")  # fmt: skip
    shown = cli_json("runs", "show", flood)
    assert (shown["state"], shown["stage"]) == ("failed", "run"), shown
    assert "disk full" in shown["reason"]
    assert agent.proc.poll() is None, agent.output()
    return agent, waiting


def _the_agent_serves_on(agent: AgentProcess, waiting: str, tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    wait_for(lambda: _state(waiting) == "finished", what="the waiting run to finish")
    assert "waited" in cli("logs", waiting, check=True).stdout
    later = _launch("other", tmp_path / "job", "python -c 'print(\"later run\")'")
    wait_for(lambda: _state(later) == "finished", what="a later run to finish")
    assert "later run" in cli("logs", later, check=True).stdout
    assert agent.proc.poll() is None, agent.output()


def test_a_run_that_fills_the_disk_of_the_run_logs_fails_as_disk_full_and_the_agent_goes_on(
    home: Path, tmp_path: Path, small_disk: Callable[[Path, str], Path], start_agent: StartAgent
) -> None:
    cli("queue", "list", check=True)
    small_disk(home / "runs", "2m")
    agent, waiting = _flood_while_another_run_waits(tmp_path, start_agent)
    _the_agent_serves_on(agent, waiting, tmp_path)


def test_a_run_with_secrets_that_fills_the_disk_fails_as_disk_full_and_the_agent_goes_on(
    home: Path, tmp_path: Path, small_disk: Callable[[Path, str], Path], start_agent: StartAgent
) -> None:
    # A run with secrets writes through its masking copier, which is what sees the full
    # disk; a run without them writes its own log and the agent's disk watch sees it.
    cli("secret", "set", "flood-token", input="s3cr3t-flood-token", check=True)
    config = '{"resource_args": {"local-process": {"env": {"TOKEN": {"secret": "flood-token"}}}}}'
    small_disk(home / "runs", "2m")
    agent, waiting = _flood_while_another_run_waits(
        tmp_path, start_agent, "local-process", "--config", config
    )
    _the_agent_serves_on(agent, waiting, tmp_path)


def test_a_container_that_fills_the_disk_of_the_run_logs_fails_as_disk_full_and_the_agent_goes_on(
    docker: Any,  # first: its clean-up (of this test's containers) comes after the agent's
    home: Path,
    tmp_path: Path,
    small_disk: Callable[[Path, str], Path],
    start_agent: StartAgent,
) -> None:
    cli("queue", "list", check=True)
    small_disk(home / "runs", "2m")
    agent, waiting = _flood_while_another_run_waits(tmp_path, start_agent, "local-container")
    _the_agent_serves_on(agent, waiting, tmp_path)


def test_a_run_that_fills_the_disk_of_the_store_fails_as_disk_full_and_the_agent_goes_on(
    home: Path, tmp_path: Path, small_disk: Callable[[Path, str], Path], start_agent: StartAgent
) -> None:
    small_disk(home, "6m")  # the database on the disk the run fills
    agent, waiting = _flood_while_another_run_waits(tmp_path, start_agent)
    _the_agent_serves_on(agent, waiting, tmp_path)


# Fills the disk with a file of its own (not its log), waits for a file, then ends well.
BALLAST = """
import os, sys, time
with open("ballast", "wb", buffering=0) as fh:
    try:
        while True:
            fh.write(bytes(65536))
    except OSError:
        pass
open(sys.argv[2], "w").close()  # on the test's disk: "the disk is full now"
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""


def test_an_agent_whose_store_disk_is_full_waits_for_space_and_records_the_run_then(
    home: Path, tmp_path: Path, small_disk: Callable[[Path, str], Path], start_agent: StartAgent
) -> None:
    small_disk(home, "6m")
    code = tmp_path / "job"
    make_script(code, "ballast.py", BALLAST)
    agent = start_agent("-q", "default")
    run_id = _launch("default", code, f"python ballast.py {tmp_path / 'go'} {tmp_path / 'full'}")
    wait_for(lambda: (tmp_path / "full").exists(), what="the disk to fill")
    (tmp_path / "go").touch()  # the run ends while its end cannot be written
    wait_for(lambda: "full" in agent.output(), what="the agent to say the disk is full")
    assert agent.proc.poll() is None, agent.output()
    (home / "runs" / run_id / "code" / "ballast").unlink()
    wait_for(lambda: _state(run_id) in ("finished", "failed"), what="the run's end recorded")
    shown = cli_json("runs", "show", run_id)
    # Its wrapper could not write the exit code, and said so into the log: on a full disk.
    assert shown["state"] == "finished" or "disk full" in shown["reason"], shown
    later = _launch("default", code, "python -c 'print(\"later run\")'")
    wait_for(lambda: _state(later) == "finished", what="a later run to finish")
    assert agent.proc.poll() is None, agent.output()


# -- an adopted container's log ------------------------------------------------------------


def test_an_adopted_containers_log_has_each_line_once_in_order(
    docker: Any, home: Path, start_agent: StartAgent
) -> None:
    import re
    import signal

    cli("queue", "create", "box", "-r", "local-container", check=True)
    count = 60
    script = f"sh -c 'for i in $(seq 1 {count}); do echo line $i; sleep 0.05; done'"
    run_id = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", script, check=True).stdout.strip()
    first = start_agent("-q", "box")
    wait_for(lambda: "line 10\n" in cli("logs", run_id).stdout, what="the first lines")
    first.signal(signal.SIGKILL)  # lost mid-run: the next agent adopts the container
    first.wait(timeout=10)
    start_agent("-q", "box", "--resume-queues")
    wait_for(lambda: _state(run_id) == "finished", timeout=60, what="the adopted run's end")
    log = cli("logs", run_id, check=True).stdout
    numbers = [int(n) for n in re.findall(r"^line (\d+)$", log, re.M)]
    assert numbers == list(range(1, count + 1)), log


# -- a run that replaces its own log with a FIFO ---------------------------------------------
def test_a_run_that_swaps_its_log_for_a_fifo_blocks_no_reader(tmp_path: Path) -> None:
    """Found by an adversarial QA pass: opening a FIFO waits for a writer for ever, so the
    direct launch that streamed the log hung (SIGTERM too), and so did `logs`. Every reader
    of a run's log opens it without blocking and takes only a plain file."""
    code = make_script(tmp_path / "code", "main.py", "print(1)\n").parent
    swap = "sh -c 'echo hi; rm ../output.log; mkfifo ../output.log; exit 4'"
    proc = cli("launch", "-u", str(code), "-E", swap, timeout=60)
    assert proc.returncode == 4, proc.stderr
    run = cli_json("runs", "list", "-n", "1")[0]
    assert (run["state"], run["exit_code"]) == ("failed", 4)
    assert cli("logs", run["id"], timeout=30).returncode == 0
    assert cli("logs", "-f", run["id"], timeout=30).returncode == 4
    from launchctl.runners import logfile

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(code / "main.py")
    for path in (fifo, link):
        with pytest.raises(OSError):
            logfile.open_log(path)
        with pytest.raises(OSError):
            logfile.open_log(path, append=True)
        assert logfile.append_line(path, "a note") is False
    plain = tmp_path / "log"
    plain.write_bytes(b"line")
    assert logfile.append_line(plain, "a note") is True
    assert plain.read_bytes() == b"line\na note\n"
