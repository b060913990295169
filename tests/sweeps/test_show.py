"""`launchctl sweep show` (issue 15): the trials, best first for the sweep's goal, the best
marked, failed trials said, --json, and --plot's PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, cli_json, make_script, table_counts

# Writes loss = (x - 2)^2 + y/10 and acc = 1 - loss; reports nothing for x=3, y=1.
TRAIN = """\
import json, os

cfg = json.loads(os.environ["WANDB_CONFIG"])
loss = (cfg["x"] - 2) ** 2 + cfg["y"] / 10
if (cfg["x"], cfg["y"]) != (3, 1):
    with open(os.environ["LAUNCHCTL_METRICS_FILE"], "a") as fh:
        fh.write(json.dumps({"loss": loss + 5}) + "\\n")  # an early, worse value
        fh.write(json.dumps({"loss": loss, "acc": 1 - loss}) + "\\n")
print("loss", loss)
"""

SWEEP = """\
job: trainer
method: grid
metric:
  name: {metric}
  goal: {goal}
parameters:
  x:
    values: [1, 2, 3]
  y:
    values: [0, 1]
scheduler:
  num_workers: 2
"""

# W&B's example training script shape (wandb.init, wandb.config, wandb.log), unchanged for
# launchctl: the queue asks for W&B's offline mode.
WANDB_TRAIN = """\
import wandb

run = wandb.init()
for epoch in range(3):
    wandb.log({"val_loss": (run.config.lr - 0.01) ** 2 + 1 / (epoch + 1)})
run.finish()
"""


def sweep(tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    proc = cli("launch-sweep", str(path), "-q", "q")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def swept(tmp_path: Path) -> dict[str, str]:
    """Two grid sweeps over the same job, run to their end: loss minimized, acc maximized."""
    cli("queue", "create", "q", "--resource", "local-process", check=True)
    code = make_script(tmp_path / "job", "train.py", TRAIN).parent
    cli("job", "create", "code", str(code), "-n", "trainer", "-E", "python train.py", check=True)
    ids = {
        "loss": sweep(tmp_path, SWEEP.format(metric="loss", goal="minimize"), "min.yaml"),
        "acc": sweep(tmp_path, SWEEP.format(metric="acc", goal="maximize"), "max.yaml"),
    }
    cli("agent", "-q", "q", "--burst", check=True, timeout=300)
    return ids


def test_show_orders_trials_by_the_goal_and_marks_the_best(swept: dict[str, str]) -> None:
    shown = cli_json("sweep", "show", swept["loss"])
    trials = shown["trials"]
    assert len(trials) == 6
    # the best value each run logged (W&B's rule), smallest first; the silent one last
    values = [t["metric"] for t in trials]
    assert values[:5] == pytest.approx([0.0, 0.1, 1.0, 1.0, 1.1])
    assert [t["params"]["x"] for t in trials[:2]] == [2, 2]
    assert trials[2]["seq"] < trials[3]["seq"]  # a tie: in proposal order
    assert [t["best"] for t in trials] == [True] + [False] * 5
    assert shown["best"]["params"] == {"x": 2, "y": 0}
    silent = trials[5]
    assert silent["params"] == {"x": 3, "y": 1} and silent["state"] == "failed"
    assert silent["metric"] is None and "no finite value of 'loss'" in silent["why"]
    assert {t["metric_source"] for t in trials[:5]} == {"metrics-file"}

    maxi = cli_json("sweep", "show", swept["acc"])
    accs = [t["metric"] for t in maxi["trials"][:5]]
    assert accs == pytest.approx([1.0, 0.9, 0.0, 0.0, -0.1])  # largest first
    assert maxi["best"]["params"] == {"x": 2, "y": 0} and maxi["metric"]["goal"] == "maximize"


def test_show_prints_a_table_with_the_best_marked_and_says_why_a_trial_failed(
    swept: dict[str, str],
) -> None:
    proc = cli("sweep", "show", swept["loss"][:4], check=True)  # a prefix is enough
    lines = proc.stdout.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["TRIAL", "RUN", "STATE"]
    )
    assert lines[header].split()[3:] == ["X", "Y", "LOSS"]
    first = lines[header + 1].split()
    assert first[0] == "*" and first[3:] == ["finished", "2", "0", "0"]
    assert not any(line.startswith("*") for line in lines[header + 2 : header + 7])
    assert lines[header + 6].split()[2:] == ["failed", "3", "1", "-"]
    assert any(line.startswith("best: trial ") and line.endswith("loss 0") for line in lines)
    assert any("failed: the run reported no finite value of 'loss'" in line for line in lines)


def test_plot_writes_a_png_and_bad_requests_are_one_line(
    swept: dict[str, str], tmp_path: Path, home: Path
) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra: pip install -e '.[test]'")
    png = tmp_path / "sweep.png"
    proc = cli("sweep", "show", swept["loss"], "--plot", str(png), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {png}" in proc.stderr
    assert "TRIAL" in proc.stdout  # the table still printed
    before = table_counts(home)
    for args, says in [
        (["--plot", str(tmp_path / "sweep.jpg")], "--plot writes a PNG"),
        (["--plot", str(tmp_path / "no-such-folder" / "p.png")], "No such file or directory"),
    ]:
        bad = cli("sweep", "show", swept["loss"], *args)
        assert bad.returncode == 1, bad.stderr
        assert says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    missing = cli("sweep", "show", "nosuchsweep")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr
    assert table_counts(home) == before


def test_plot_without_matplotlib_says_how_to_get_it(swept: dict[str, str], tmp_path: Path) -> None:
    # a Python where matplotlib cannot be imported (shadowed by a package that refuses)
    fake = tmp_path / "no-matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    png = tmp_path / "p.png"
    proc = cli(
        "sweep", "show", swept["loss"], "--plot", str(png),
        env={"PYTHONPATH": str(fake.parent)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "pip install 'launchctl[plot]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not png.exists()


def test_an_unmodified_wandb_script_is_swept_with_its_metric_read_from_wandb_offline(
    tmp_path: Path,
) -> None:
    pytest.importorskip("wandb", reason="wandb is a test dependency: pip install -e '.[test]'")
    config = {"resource_args": {"local-process": {"env": {"WANDB_MODE": "offline",
                                                            "WANDB_SILENT": "true"}}}}  # fmt: skip
    cli("queue", "create", "q", "--config", json.dumps(config), check=True)
    code = make_script(tmp_path / "job", "train.py", WANDB_TRAIN).parent
    cli("job", "create", "code", str(code), "-n", "trainer", "-E", "python train.py", check=True)
    sweep_id = sweep(
        tmp_path,
        "job: trainer\nmethod: grid\nmetric: {name: val_loss}\n"
        "parameters:\n  lr: {values: [0.001, 0.01, 0.1]}\nscheduler: {num_workers: 3}\n",
        "wandb.yaml",
    )
    cli("agent", "-q", "q", "--burst", check=True, timeout=300)
    shown = cli_json("sweep", "show", sweep_id)
    assert [t["state"] for t in shown["trials"]] == ["finished"] * 3
    assert {t["metric_source"] for t in shown["trials"]} == {"wandb-offline"}
    # each run's smallest val_loss is its last epoch's (1/3 + (lr - 0.01)^2)
    assert [t["params"]["lr"] for t in shown["trials"]] == [0.01, 0.001, 0.1]
    assert shown["best"]["metric"] == pytest.approx(1 / 3)
