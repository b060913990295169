"""A trial's metric (issue 15): read from what its run reported, W&B's offline summary or
the metrics file named by LAUNCHCTL_METRICS_FILE, and nothing a run wrote trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from launchctl.sweeps.results import Score, score
from tests.conftest import cli, make_script

TRAIN = """\
import wandb

run = wandb.init(config={"lr": 0.1})
for loss in (0.9, 0.2, 0.5):
    wandb.log({"loss": loss * run.config.lr * 10})
run.finish()
"""

HOSTILE = """\
import json, os, sys

path = os.environ["LAUNCHCTL_METRICS_FILE"]
mode = sys.argv[1]
if mode == "good":
    with open(path, "a") as fh:
        for loss in (0.9, 0.2, 0.5):
            fh.write(json.dumps({"loss": loss, "epoch": 1}) + "\\n")
elif mode == "symlink":
    with open("elsewhere.jsonl", "w") as fh:
        fh.write('{"loss": 0.001}\\n')
    os.symlink(os.path.abspath("elsewhere.jsonl"), path)
elif mode == "huge":
    line = b"x" * 999 + b"\\n"
    with open(path, "wb") as fh:
        fh.write(b'{"loss": 0.01}\\n')  # early: beyond what is read of a huge file
        for _ in range(50 * 1024):
            fh.write(line)
        fh.write(b'{"loss": 0.25}\\n')
elif mode == "garbage":
    with open(path, "wb") as fh:
        fh.write(b"\\xff\\xfe not json\\n[1, 2]\\nnull\\n")
        fh.write(b'{"loss": "0.1"}\\n{"loss": true}\\n{"loss": [0.1]}\\n{"loss": 1e999}\\n')
        fh.write(b'{"loss": ' + b"1" * 500 + b"}\\n")
        fh.write(b"[" * 30000 + b"\\n")
        fh.write(b'{"loss": 0.3' + b"\\x00" * 10 + b"\\n")
elif mode == "nan":
    with open(path, "w") as fh:
        fh.write('{"loss": NaN}\\n{"loss": Infinity}\\n{"loss": -Infinity}\\n')
elif mode == "fifo":
    os.mkfifo(path)
print("wrote", mode, flush=True)
"""


def queue(name: str, env: dict[str, str]) -> None:
    config = {"resource_args": {"local-process": {"env": env}}}
    cli("queue", "create", name, "--config", json.dumps(config), check=True)


def launch(*args: str) -> str:
    proc = cli("launch", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split()[-1]


def test_an_unmodified_wandb_script_run_offline_is_scored_from_its_summary(
    tmp_path: Path, store: Store
) -> None:
    pytest.importorskip("wandb", reason="wandb is a test dependency: pip install -e '.[test]'")
    queue("offline", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    code = make_script(tmp_path / "job", "train.py", TRAIN).parent
    run_id = launch("-q", "offline", "-u", str(code), "-E", "python train.py")
    cli("agent", "-q", "offline", "--burst", check=True, timeout=180)
    run = store.runs.get(run_id)
    assert run["state"] == "finished", run["reason"]
    # read from its W&B transaction log (history and summary), by W&B's sweep rule:
    # the best value logged for the goal
    got = score(store, run, "loss", "minimize")
    assert got.source == "wandb-offline" and got.value == pytest.approx(0.2), got
    assert score(store, run, "loss", "maximize").value == pytest.approx(0.9)
    assert score(store, run, "accuracy").value is None


def test_a_trial_reports_through_its_metrics_file_and_the_goal_picks_the_value(
    tmp_path: Path, store: Store
) -> None:
    # A sweep's trial has WANDB_SWEEP_ID in its environment (the scheduler's runs do):
    # only such a run is given a metrics file.
    queue("trials", {"WANDB_SWEEP_ID": "sweep1"})
    queue("plain", {})
    code = make_script(tmp_path / "job", "hostile.py", HOSTILE).parent
    trial = launch("-q", "trials", "-u", str(code), "-E", "python hostile.py good")
    plain = launch("-q", "plain", "-u", str(code), "-E", "python hostile.py good")
    cli("agent", "-q", "trials", "-q", "plain", "--burst", check=True, timeout=120)
    run = store.runs.get(trial)
    assert run["state"] == "finished", run["reason"]
    # W&B's sweep engine's rule: the best value the run logged for the goal
    assert score(store, run, "loss", "minimize") == Score(0.2, "metrics-file", None)
    assert score(store, run, "loss", "maximize") == Score(0.9, "metrics-file", None)
    assert score(store, run, "loss").value == 0.2  # W&B's default goal: minimize
    missing = score(store, run, "acc", "maximize")
    assert missing.value is None and missing.source == "none"
    assert "'acc'" in (missing.why or "")
    # a run that is no trial got no LAUNCHCTL_METRICS_FILE: its script failed on the lookup
    other = store.runs.get(plain)
    assert other["state"] == "failed"
    assert "KeyError: 'LAUNCHCTL_METRICS_FILE'" in (store.run_dir(plain) / "output.log").read_text()


@pytest.mark.parametrize(
    ("mode", "value", "why"),
    [
        ("symlink", None, "symbolic link"),
        ("huge", 0.25, "only its end was read"),
        ("garbage", None, "no finite value"),
        ("nan", None, "no finite value"),
        ("fifo", None, "not a regular file"),
    ],
)
def test_a_hostile_metrics_file_gives_no_value_or_only_what_is_sound(
    tmp_path: Path, store: Store, mode: str, value: float | None, why: str
) -> None:
    queue("trials", {"WANDB_SWEEP_ID": "sweep1"})
    code = make_script(tmp_path / "job", "hostile.py", HOSTILE).parent
    run_id = launch("-q", "trials", "-u", str(code), "-E", f"python hostile.py {mode}")
    cli("agent", "-q", "trials", "--burst", check=True, timeout=120)
    run = store.runs.get(run_id)
    assert run["state"] == "finished", run["reason"]
    got = score(store, run, "loss", "minimize")
    assert got.value == value, got
    assert why in (got.why or ""), got
    assert got.source == ("none" if value is None else "metrics-file")


def test_a_wandb_folder_or_log_behind_a_link_is_not_read(tmp_path: Path, store: Store) -> None:
    """A run's offline folder that is a link, or whose transaction log is a link (to a log
    with a fine value): neither is read; a log that is not W&B's is said."""
    pytest.importorskip("wandb", reason="wandb is a test dependency: pip install -e '.[test]'")
    queue("offline", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    code = make_script(tmp_path / "job", "train.py", TRAIN).parent
    run_id = launch("-q", "offline", "-u", str(code), "-E", "python train.py")
    cli("agent", "-q", "offline", "--burst", check=True, timeout=180)
    run = store.runs.get(run_id)
    wandb_dir = Path(run["workdir"]) / "wandb"
    (own,) = wandb_dir.glob("offline-run-*")
    # the good log moves out of the run's folder; links point at it
    outside = tmp_path / "outside"
    own.rename(outside)
    (log,) = outside.glob("run-*.wandb")
    os.symlink(outside, wandb_dir / "offline-run-20260101_000000-abc")
    own.mkdir()
    os.symlink(log, own / log.name)
    got = score(store, run, "loss")
    assert got.value is None and got.source == "none", got
    assert "offline-run-20260101_000000-abc is not a folder of its own" in (got.why or "")
    assert "symbolic link" in (got.why or ""), got
    (own / log.name).unlink()
    (own / log.name).write_bytes(b"not a W&B log at all" * 1000)
    got = score(store, run, "loss")
    assert got.value is None and "is not a W&B transaction log" in (got.why or ""), got
    # the same log as a file of the run's own is read
    (own / log.name).write_bytes(log.read_bytes())
    assert score(store, run, "loss").value == pytest.approx(0.2)


def test_a_container_trial_reports_through_its_mounted_metrics_file(
    tmp_path: Path, store: Store, docker: Any
) -> None:
    """A container trial's LAUNCHCTL_METRICS_FILE is in a folder of the run's own, mounted at
    /launchctl-metrics (no host path into the store shown to it), and is scored after the
    container is gone."""
    from tests.conftest import BUSYBOX

    job = make_script(
        tmp_path / "job",
        "report.sh",
        'echo "file=$LAUNCHCTL_METRICS_FILE"\n'
        """echo '{"loss": 0.7}' >> "$LAUNCHCTL_METRICS_FILE"\n"""
        """echo '{"loss": 0.3}' >> "$LAUNCHCTL_METRICS_FILE"\n""",
    ).parent
    env = {"WANDB_SWEEP_ID": "sweep1"}
    config = {"resource_args": {"local-container": {"env": env, "volume": [f"{job}:/job:ro"]}}}
    cli("queue", "create", "box", "-r", "local-container", "-c", json.dumps(config), check=True)
    run_id = launch("-q", "box", "-d", BUSYBOX, "-E", "sh /job/report.sh")
    cli("agent", "-q", "box", "--burst", check=True, timeout=120)
    run = store.runs.get(run_id)
    log = (store.run_dir(run_id) / "output.log").read_text()
    assert run["state"] == "finished", log
    assert "file=/launchctl-metrics/metrics.jsonl" in log
    assert score(store, run, "loss") == Score(0.3, "metrics-file", None)
