"""The environment a run sees: W&B's variables, so an unmodified ``wandb.init()`` works."""

from __future__ import annotations

import json
from typing import Any


def run_environment(run: dict[str, Any], *, resumed: bool = False) -> dict[str, str]:
    spec = run["spec"]
    overrides = spec.get("overrides") or {}
    env = {
        "WANDB_CONFIG": json.dumps(overrides.get("run_config") or {}),
        "WANDB_RUN_ID": run["id"],
        "WANDB_NAME": run["name"],
        "WANDB_PROJECT": run["project"],
        "WANDB_ENTITY": run["entity"],
        "WANDB_LAUNCH": "True",
        "LAUNCHCTL_RUN_ID": run["id"],
    }
    if run.get("queue_name"):
        env["WANDB_LAUNCH_QUEUE_NAME"] = run["queue_name"]
    if spec.get("job"):
        env["WANDB_JOB_NAME"] = str(spec["job"])
    if resumed or run.get("resume_count"):
        env["WANDB_RESUME"] = "allow"
    return env


def env_from_option(value: Any) -> dict[str, str]:
    """``env`` in resource args: an object, or a list of ``NAME=value`` strings."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(item).split("=", 1) for item in value)
    return {}
