"""W&B's real client, offline: an unmodified script sees launchctl's overrides and run id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, cli, cli_json

pytest.importorskip("wandb", reason="wandb is a test dependency: pip install -e '.[test]'")


def test_wandb_init_sees_set_override_and_the_launch_run_id(tmp_path: Path) -> None:
    result = tmp_path / "seen.json"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "RESULT_FILE": str(result),
        "WANDB_SILENT": "true",
    }
    proc = cli(
        "launch",
        "-u",
        str(EXAMPLES / "wandb-config"),
        "-E",
        "python train.py",
        "--set",
        "lr=0.5",
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(result.read_text())
    run = cli_json("runs", "list")[0]
    assert seen["lr"] == 0.5
    assert seen["batch_size"] == 32  # defaults the launch did not override stay
    assert seen["run_id"] == run["id"]
