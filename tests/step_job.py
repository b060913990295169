"""The job 'step' the workflow tests launch: it waits for ``--set gate=PATH`` to exist
when given, writes ``--set mark=PATH`` when given, then exits with ``--set exit=N``
(0 by default)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli, make_script

STEP = (
    "import json, os, sys, time\n"
    "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
    "while cfg.get('gate') and not os.path.exists(cfg['gate']):\n"
    "    time.sleep(0.02)\n"
    "if cfg.get('mark'):\n"
    "    open(cfg['mark'], 'w').close()\n"
    "sys.exit(int(cfg.get('exit', 0)))\n"
)


def create_step_job(tmp_path: Path) -> str:
    """Create the job 'step' from a fresh folder under ``tmp_path``; returns its name."""
    code = make_script(tmp_path / "step", "main.py", STEP).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "step", check=True)
    return "step"
