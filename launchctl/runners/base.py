"""The runner protocol: every resource type starts, polls and stops runs the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from launchctl.errors import RunnerError
from launchctl.guardrails import Limits

if TYPE_CHECKING:
    from launchctl.runas import RunAs

__all__ = [
    "METRICS_ENV",
    "METRICS_FILE",
    "METRICS_MOUNT",
    "WANDB_DIR_MOUNT",
    "CacheMount",
    "Exit",
    "Handle",
    "Launch",
    "Runner",
    "RunnerError",
]

# Where a container run's W&B offline files go inside the container (its WANDB_DIR).
WANDB_DIR_MOUNT = "/launchctl-wandb"
# A sweep's trial reports its metric as JSON lines appended to the file this variable
# names (issue 15, launchctl/sweeps/results.py); a container run's is in a folder of its
# own mounted at METRICS_MOUNT.
METRICS_ENV = "LAUNCHCTL_METRICS_FILE"
METRICS_FILE = "metrics.jsonl"
METRICS_MOUNT = "/launchctl-metrics"


@dataclass
class CacheMount:
    """The queue's artifact cache: a named volume or a host path, mounted at ``target``."""

    source: str
    kind: str  # "volume" or "bind"
    target: str


@dataclass
class Launch:
    """Everything a runner needs to start one run, resolved by the agent."""

    run: dict[str, Any]
    entrypoint: list[str]  # empty: the image's own entry point (containers only)
    args: list[str]
    env: dict[str, str] = field(repr=False)  # may hold secret values: never in a repr
    workdir: Path
    log_path: Path
    resource_args: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    cache: CacheMount | None = None
    registry_auth: dict[str, str] | None = None
    registry: str | None = None  # the registry (host[:port]) registry_auth is for (issue 14)
    agent_id: str | None = None
    limits: Limits = field(default_factory=Limits)
    on_exit: Callable[[], None] = lambda: None  # wakes the agent when the run ends
    # The GPUs the agent gave the run (indices); None: the agent does not schedule GPUs.
    devices: list[str] | None = None
    # The secret values in ``env``: runners mask them (``***``) in what the run prints.
    secrets: list[str] = field(default_factory=list, repr=False)
    # The Unix user a local-process run runs as (its queue's run_as); None: the agent's.
    run_as: RunAs | None = None
    # A container run that asked for W&B's offline mode: the host folder (in the run's own
    # folder, never the job's files) mounted at WANDB_DIR_MOUNT, its WANDB_DIR, so the
    # ``wandb/offline-run-*`` folders it writes outlive the container (``launchctl sync``).
    wandb_dir: Path | None = None
    # A sweep's trial in a container: the host folder (in the run's own folder) mounted at
    # METRICS_MOUNT, where its LAUNCHCTL_METRICS_FILE is (issue 15).
    metrics_dir: Path | None = None
    # Its folder was made for this attempt (issue 17): nothing an earlier one left is in it.
    fresh: bool = False

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.args]


@dataclass
class Exit:
    """How a run ended, as far as its runner can tell."""

    code: int | None
    signal: int | None = None
    message: str | None = None
    preempted: bool = False  # taken away from outside, not the run's own failure
    cancelled: bool = False  # cancelled on its engine from outside (scancel): stopped


class Handle(Protocol):
    """A started run. ``poll`` never blocks."""

    @property
    def pid(self) -> int | None: ...

    @property
    def pid_started(self) -> str | None:
        """With pid, tells this process apart from a later one."""
        ...

    def poll(self) -> Exit | None: ...

    def stop(self, grace_s: float) -> None:
        """Ask the run to stop: SIGTERM-like now, forced after ``grace_s``."""
        ...

    def release(self) -> None:
        """The run's end is recorded: free what the runner kept for it (a container)."""
        ...


def engine_state(handle: Handle) -> str | None:
    """What a cluster's engine says of a run it has not started yet (``queued on the engine:
    ...``, ``starting on the engine``), from a handle that has an ``engine_state()`` method
    (the kubernetes and slurm runners'); None for the others, and once the run runs (issue 14).
    """
    method = getattr(handle, "engine_state", None)
    return method() if callable(method) else None


class Runner(Protocol):
    resource: str

    def start(self, launch: Launch) -> Handle: ...

    def adopt(
        self,
        run: dict[str, Any],
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
    ) -> Handle | Exit | None:
        """Find a run started by a lost agent: a handle if it still runs, its Exit if it
        ended and the runner can tell how, None if nothing of it is left."""
        ...
