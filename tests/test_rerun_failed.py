"""`runs rerun --failed` (issue 18): every failed run requeued in one step.

The real CLI and real agents: each rerun is recorded as a rerun of its original, a run
already rerun is never rerun again (not even by two commands at once), only the runs the
user may rerun are, and nothing happens when nothing matches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from launchctl.store import Store
from tests.conftest import cli, cli_json, make_script, table_counts

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
CAROL = {"LAUNCHCTL_USER": "carol"}
FAIL = "import sys\nprint('failing')\nsys.exit(3)\n"
PASS = "print('fine')\n"


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(proc.stderr)


def code(tmp_path: Path, name: str, body: str) -> str:
    return str(make_script(tmp_path / name, "main.py", body).parent)


def launch(queue: str, src: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = cli("launch", "-q", queue, "-u", src, "-E", "python main.py", *args, env=env,
               check=True)  # fmt: skip
    return proc.stdout.strip()


def drain(queue: str, env: dict[str, str] | None = None) -> None:
    cli("agent", "-q", queue, "--burst", env=env, check=True, timeout=120)


def test_every_failed_run_is_rerun_once_and_recorded_as_a_rerun(
    store: Store, tmp_path: Path
) -> None:
    cli("queue", "create", "q", check=True)
    bad, good = code(tmp_path, "bad", FAIL), code(tmp_path, "good", PASS)
    failed = [launch("q", bad, "--set", f"seed={i}") for i in range(3)]
    fine = launch("q", good)
    drain("q")
    assert [store.runs.get(r)["state"] for r in failed] == ["failed"] * 3
    proc = cli("runs", "rerun", "--failed")
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.split()
    assert len(new) == 3 and proc.stderr == ""
    reruns = [store.runs.get(n) for n in new]
    # Oldest first, each a rerun of its original with its spec, queued.
    assert [r["rerun_of"] for r in reruns] == failed
    assert [r["spec"]["overrides"]["run_config"] for r in reruns] == [{"seed": i} for i in range(3)]
    assert {r["state"] for r in reruns} == {"queued"}
    assert fine not in {r["rerun_of"] for r in reruns}
    # Again: the originals already have their reruns, the reruns have not failed yet.
    again = cli("runs", "rerun", "--failed")
    assert again.returncode == 0 and again.stdout == ""
    assert again.stderr.splitlines() == [
        *(f"skipping run {f}: already rerun as {n}" for f, n in zip(failed, new, strict=True)),
        "no failed runs to rerun",
    ]
    # The reruns fail too: the next bulk rerun takes them, never the originals again.
    drain("q")
    third = cli("runs", "rerun", "--failed", "--json")
    assert third.returncode == 0, third.stderr
    shown = json.loads(third.stdout)
    assert [r["rerun_of"] for r in shown["rerun"]] == new
    assert [s["run"] for s in shown["skipped"]] == failed
    assert shown["dry_run"] is False and shown["not_yours"] == 0
    assert cli_json("runs", "show", shown["rerun"][0]["run"])["rerun_of"] == new[0]


def test_the_queue_and_since_filters_and_a_dry_run(home: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        cli("queue", "create", name, check=True)
    bad = code(tmp_path, "bad", FAIL)
    in_a, in_b = launch("a", bad), launch("b", bad)
    drain("a")
    drain("b")
    before = table_counts(home)
    dry = cli("runs", "rerun", "--failed", "-q", "a", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == f"{in_a} (would be rerun)\n"
    assert table_counts(home) == before
    future = cli("runs", "rerun", "--failed", "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout == ""
    assert future.stderr == "no failed runs to rerun\n"
    assert table_counts(home) == before
    proc = cli("runs", "rerun", "--failed", "-q", "b", "--since", "1h", "-P", "high",
               "--set", "lr=0.5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rerun = cli_json("runs", "show", proc.stdout.strip())
    assert rerun["rerun_of"] == in_b and rerun["queue_name"] == "b" and rerun["priority"] == 1
    assert rerun["spec"]["overrides"]["run_config"] == {"lr": 0.5}


def test_bad_combinations_are_refused_in_one_line_with_nothing_written(
    home: Path, tmp_path: Path
) -> None:
    cli("queue", "create", "q", check=True)
    run_id = launch("q", code(tmp_path, "bad", FAIL))
    drain("q")
    before = table_counts(home)
    cases = {
        ("runs", "rerun", run_id, "--failed"): "pass a run id or --failed, not both",
        ("runs", "rerun"): "pass a run id to rerun, or --failed",
        ("runs", "rerun", run_id, "-q", "q"): "--queue (-q) goes with --failed",
        ("runs", "rerun", run_id, "--dry-run"): "--dry-run goes with --failed",
        ("runs", "rerun", "--failed", "-q", "nope"): "queue 'nope' does not exist",
        ("runs", "rerun", "--failed", "--since", "yesterday"): "invalid --since value",
        ("runs", "rerun", "--failed", "-P", "urgent"): "invalid priority",
        ("runs", "rerun", "--failed", "--set", "x"): "--set expects key=value",
    }
    for args, said in cases.items():
        assert said in one_line_error(cli(*args)), args
    assert table_counts(home) == before


def test_only_runs_the_user_may_rerun_are_rerun(store: Store, tmp_path: Path) -> None:
    """bob's failed run is his: carol, a member too, leaves it alone (said in one line);
    alice, the entity's admin, may rerun it, as her own launch."""
    cli("team", "create", "vision", env=ALICE, check=True)
    for who in ("bob", "carol"):
        cli("team", "add", "vision", who, env=ALICE, check=True)
    cli("queue", "create", "q", "--entity", "vision", env=ALICE, check=True)
    bad = code(tmp_path, "bad", FAIL)
    bobs = launch("q", bad, "-e", "vision", env=BOB)
    drain("q", env=BOB)
    proc = cli("runs", "rerun", "--failed", env=CAROL)
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "left 1 failed run of other users alone: only a run's author or an admin of its"
        " entity reruns it in bulk",
        "no failed runs to rerun",
    ]
    mine = cli("runs", "rerun", "--failed", env=ALICE)
    assert mine.returncode == 0, mine.stderr
    rerun = store.runs.get(mine.stdout.strip())
    assert rerun["rerun_of"] == bobs and rerun["spec"]["author"] == "alice"


def test_a_run_the_queue_no_longer_allows_is_skipped_saying_why(
    store: Store, tmp_path: Path
) -> None:
    cpus = {"type": "integer", "minimum": 1, "maximum": 8, "default": 1}
    config = {"resource_args": {"local-process": {"env": {"N": "{{n}}"}}},
              "template_variables": {"n": cpus}}  # fmt: skip
    cli("queue", "create", "q", "--config", json.dumps(config), check=True)
    bad = code(tmp_path, "bad", FAIL)
    big, small = launch("q", bad, "-v", "n=6"), launch("q", bad, "-v", "n=2")
    drain("q")
    config["template_variables"]["n"]["maximum"] = 4  # type: ignore[index]
    cli("queue", "edit", "q", "--config", json.dumps(config), check=True)
    proc = cli("runs", "rerun", "--failed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        f"skipping run {big}: template variable n: value 6 is above the maximum 4\n"
    )
    assert store.runs.get(proc.stdout.strip())["rerun_of"] == small


def test_two_bulk_reruns_at_once_never_rerun_one_run_twice(store: Store, tmp_path: Path) -> None:
    cli("queue", "create", "q", check=True)
    bad = code(tmp_path, "bad", FAIL)
    failed = [launch("q", bad, "--set", f"i={i}") for i in range(8)]
    drain("q")

    def bulk(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launchctl", "runs", "rerun", "--failed"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with ThreadPoolExecutor(3) as pool:
        procs = list(pool.map(bulk, range(3)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    new = [line for p in procs for line in p.stdout.split()]
    originals = [store.runs.get(n)["rerun_of"] for n in new]
    assert sorted(originals) == sorted(failed)  # each once, and every one
