"""The environment a run sees: W&B's variables, so an unmodified ``wandb.init()`` works.

The names and values follow W&B's ``LaunchProject.get_env_vars_dict``
(wandb/sdk/launch/_project_spec.py), for what launchctl knows: no W&B server's address
or API key (``WANDB_BASE_URL``, ``WANDB_API_KEY``) is made up; a queue passes the agent's
own through by naming them in its ``env`` list (``env: [WANDB_API_KEY]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any


def env_problem(name: Any, value: Any) -> str | None:
    """Why no process could be given ``name=value`` (checked where an env is written:
    a queue's config, a launch's -R, an agent's config), or None. ``name`` is shown
    escaped, since it is a launcher's text."""
    if not isinstance(name, str) or not name or "=" in name or "\0" in name:
        return (
            f"{name!a} cannot be an environment variable's name (it is empty, or holds '='"
            " or a NUL)"
        )
    if isinstance(value, str) and "\0" in value:
        return f"the value of {name!a} holds a NUL character"
    return None


# What ``docker run -e NAME`` takes as a variable's name (POSIX's portable names).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def run_environment(
    run: dict[str, Any],
    *,
    resumed: bool = False,
    docker_image: str | None = None,
    queue_entity: str | None = None,
) -> dict[str, str]:
    """W&B's variables for ``run``. ``docker_image``: the image the run names (``-d``, or
    its image job's), which W&B gives as ``WANDB_DOCKER`` (not an image built for it);
    ``queue_entity``: the entity of the queue it came from."""
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
        # W&B always sets both; launchctl's job is not a W&B artifact, so no "_wandb_job"
        # slot (wandb.init would ask W&B's server for it, and fail offline).
        "WANDB_ARTIFACTS": json.dumps(overrides.get("artifacts") or {}),
        "WANDB_LAUNCH_FILE_OVERRIDES": json.dumps(overrides.get("files") or {}),
    }
    if docker_image:
        env["WANDB_DOCKER"] = docker_image
    if spec.get("author"):
        env["WANDB_USERNAME"] = str(spec["author"])
    if run.get("queue_name"):
        env["WANDB_LAUNCH_QUEUE_NAME"] = run["queue_name"]
        # W&B's trace id is the queue item's id: here the run's own.
        env["WANDB_LAUNCH_TRACE_ID"] = run["id"]
    if queue_entity:
        env["WANDB_LAUNCH_QUEUE_ENTITY"] = queue_entity
    if spec.get("job"):
        env["WANDB_JOB_NAME"] = str(spec["job"])
    if spec.get("sweep_id"):  # a sweep's trial (issue 15), as W&B's launch sets it
        env["WANDB_SWEEP_ID"] = str(spec["sweep_id"])
    if resumed or run.get("resume_count"):
        env["WANDB_RESUME"] = "allow"
    env.update(array_environment(spec))
    return env


# A run of ``launch --array`` (issue 18): launchctl's names, and Slurm's for the same facts
# (a Slurm queue's runner passes both: each run is its own sbatch job, not a Slurm array).
ARRAY_NAMES = {
    "id": "LAUNCHCTL_ARRAY_ID",
    "index": "LAUNCHCTL_ARRAY_INDEX",
    "count": "LAUNCHCTL_ARRAY_COUNT",
    "min": "LAUNCHCTL_ARRAY_MIN",
    "max": "LAUNCHCTL_ARRAY_MAX",
}
SLURM_ARRAY_NAMES = {
    "LAUNCHCTL_ARRAY_ID": "SLURM_ARRAY_JOB_ID",
    "LAUNCHCTL_ARRAY_INDEX": "SLURM_ARRAY_TASK_ID",
    "LAUNCHCTL_ARRAY_COUNT": "SLURM_ARRAY_TASK_COUNT",
    "LAUNCHCTL_ARRAY_MIN": "SLURM_ARRAY_TASK_MIN",
    "LAUNCHCTL_ARRAY_MAX": "SLURM_ARRAY_TASK_MAX",
}


def array_environment(spec: dict[str, Any]) -> dict[str, str]:
    """``LAUNCHCTL_ARRAY_ID``, ``_INDEX``, ``_COUNT``, ``_MIN`` and ``_MAX`` for a run of an
    array (its spec's ``array``, written by ``launchctl.arrays``; a launch spec from
    ``-c`` cannot hold that key); nothing for any other run."""
    facts = spec.get("array")
    if not isinstance(facts, dict):
        return {}
    return {name: str(facts[key]) for key, name in ARRAY_NAMES.items() if key in facts}


def slurm_array_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Slurm's names for an array run's facts (``SLURM_ARRAY_TASK_ID`` ...), from the
    LAUNCHCTL_ARRAY_* variables in ``env``: a script written for ``sbatch --array`` reads
    them unchanged."""
    return {slurm: env[ours] for ours, slurm in SLURM_ARRAY_NAMES.items() if ours in env}


def env_items(value: Any) -> list[Any]:
    """``env`` (or ``e``) as a list of items: a list as it is, one string as one item."""
    if isinstance(value, list):
        return value
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [value]
    return []


def env_from_option(value: Any, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` in resource args: an object, or a list of ``NAME=value`` strings (or one).

    A bare ``NAME`` item takes ``environ``'s value, as ``docker run -e NAME`` takes the
    caller's: absent from ``environ`` (or with no ``environ``), the run does not get it.
    """
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    env: dict[str, str] = {}
    for item in env_items(value):
        name, equals, text = str(item).partition("=")
        if equals:
            env[name] = text
        elif environ is not None and name in environ:
            env[name] = environ[name]
    return env
