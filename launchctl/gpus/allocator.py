"""The agent's GPU side: which devices it hands out, and claims that come with devices.

The agent calls ``claim`` instead of a plain claim when it schedules GPUs; the device
check, the claim and the allocation happen in one transaction (``GpuTable``). Freeing
needs no call: the store frees a run's devices with any move that ends its hold.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from launchctl.errors import UsageError
from launchctl.gpus import devices as disc
from launchctl.gpus.devices import Device
from launchctl.gpus.policy import (
    DEFAULT_BACKFILL_S,
    DEFAULT_BUSY_MB,
    Plan,
    plan,
    sharing_of,
    slots_for,
    walk,
)
from launchctl.gpus.waiting import Passed, ask_of, lacking
from launchctl.store.db import Row

if TYPE_CHECKING:
    from launchctl.store import Store

# How often the agent looks at the devices' memory (nvidia-smi costs a process each time).
PROBE_EVERY_S = 2.0

Probe = Callable[[], dict[int, int] | None]


@dataclass
class GpuOptions:
    """How an agent schedules GPUs: its devices, and the two knobs of the policy."""

    devices: list[Device]  # the ones it hands out (``--gpus`` limits them)
    found: list[Device] = field(default_factory=list)  # every device discovery saw
    source: str = "configured"  # nvml, nvidia-smi or configured
    busy_mb: int = DEFAULT_BUSY_MB  # used above this by someone else: busy
    backfill_s: float = DEFAULT_BACKFILL_S  # see launchctl.gpus.policy
    probe: Probe | None = None  # memory used per device, MiB; None: never known


def options_from_flags(
    gpus: str | None,
    *,
    busy_mb: int = DEFAULT_BUSY_MB,
    backfill_s: float = DEFAULT_BACKFILL_S,
) -> GpuOptions | None:
    """The agent's GPU options from its flags; None when it has no GPU to schedule.

    Without ``--gpus`` the agent schedules every GPU NVML or nvidia-smi finds; with it,
    only those (or, where none can be seen, the list as given); ``--gpus none``: none.
    """
    if busy_mb < 0:
        raise UsageError(f"--gpu-busy-mb must be 0 or more, got {busy_mb}")
    if backfill_s < 0:
        raise UsageError(f"--gpu-backfill-s must be 0 or more, got {backfill_s:g}")
    wanted = disc.parse_list(gpus) if gpus is not None else None
    if gpus is not None and wanted is None:
        return None
    found, source = disc.discover()
    chosen = disc.select(found, wanted)
    if not chosen:
        return None
    return GpuOptions(
        devices=chosen,
        found=found or chosen,
        source=source if found else "configured",
        busy_mb=busy_mb,
        backfill_s=backfill_s,
        probe=disc.memory_used if found else None,
    )


class GpuAllocator:
    """One agent's view of the machine's GPU pool."""

    def __init__(
        self, store: Store, options: GpuOptions, agent_id: str, host: str | None = None
    ) -> None:
        self.store = store
        self.options = options
        self.agent_id = agent_id
        self.host = host or socket.gethostname()
        self.indices = [d.index for d in options.devices]
        self._used: dict[int, int] | None = None
        self._probed_at = float("-inf")

    def start(self) -> int:
        """Record the machine's devices; free what no held run stands behind. Returns that."""
        self.store.gpus.report(self.host, self.options.found, self.options.source)
        return self.store.gpus.free_stale(self.host)

    def used(self) -> dict[int, int] | None:
        """Memory used per device, looked at no more than every ``PROBE_EVERY_S``."""
        probe = self.options.probe
        if probe is None:
            return None
        now = time.monotonic()
        if now - self._probed_at >= PROBE_EVERY_S:
            self._used = probe()
            self._probed_at = now
        return self._used

    def claim(self, queue_id: int, lease_s: float, passed: Passed | None = None) -> Row | None:
        """Claim the queue's next run that fits, with its devices (see ``policy.plan``).

        Runs this agent's devices can never hold go into ``passed``, with why they wait."""
        used = self.used()

        def planner(
            queue: Row, rows: list[Row], allocations: list[Row], reservations: list[Row], now: float
        ) -> Plan:
            slots = slots_for(self.indices, allocations, reservations, used, self.options.busy_mb)
            candidates = walk(rows, ask_of(queue), sharing_of(queue["config"]), now)
            chosen = plan(candidates, slots, self.options.backfill_s)
            if passed is not None:
                for run_id, ask in chosen.unservable.items():
                    passed.reasons[run_id] = lacking(ask, self.agent_id, self.indices)
            return chosen

        run_id = self.store.gpus.claim_with_devices(
            queue_id, self.agent_id, lease_s, host=self.host, planner=planner
        )
        return self.store.runs.get(run_id) if run_id is not None else None
