"""GPU workstation scheduling: each run gets its own devices.

``devices`` finds the GPUs, ``policy`` decides which waiting run gets which,
``allocator`` is the agent's side. This module holds what the rest of launchctl calls:
the refusal at launch, a run's environment and device list, and the device table's rows
(the CLI prints them: ``launchctl/cli/gpus.py``).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from launchctl.errors import LaunchctlError
from launchctl.gpus.policy import parse_ask

if TYPE_CHECKING:
    from launchctl.gpus.allocator import GpuAllocator
    from launchctl.gpus.devices import Device
    from launchctl.store import Row, Store


def check_machine_fits(store: Store, value: Any) -> None:
    """Refuse a run that asks for more GPUs than the machine has (once an agent has said).

    Agents that hand out GPUs name them by index, so then a ``device=`` ask must too.
    """
    if value is None:
        return
    known = store.gpus.machine(socket.gethostname())
    if known is None:
        return
    ask = parse_ask(value)
    if ask.none or ask.every:
        return
    host, indices = known
    have = f"{len(indices)} GPU{'' if len(indices) == 1 else 's'}"
    listed = ",".join(str(i) for i in indices)
    if ask.count > len(indices):
        raise LaunchctlError(
            f"the run asks for {ask}, but machine {host} has {have} ({listed}); ask for"
            f" {len(indices)} or fewer"
        )
    missing = [i for i in ask.exact if i not in indices]
    if missing:
        raise LaunchctlError(
            f"the run asks for GPU {missing[0]}, but machine {host} has {have} ({listed})"
        )


def run_devices(run: Row) -> list[int] | None:
    """The devices a run was given; None when its agent does not schedule GPUs."""
    from launchctl.store.gpus import decode_devices

    return decode_devices(run.get("devices"))


def check_given(run: Row, value: Any) -> None:
    """Refuse to start a run whose GPUs do not match its ask (its rules changed, or the ask
    cannot be read); the agent fails it, saying why, rather than run it on the wrong GPUs."""
    got = run_devices(run)
    if got is None:
        return
    ask = parse_ask(value)  # a ConfigError says what is wrong with it
    given = ",".join(str(i) for i in got) or "none"
    wrong = sorted(ask.exact) != sorted(got) if ask.exact else len(got) != ask.count
    if not ask.every and wrong:
        raise LaunchctlError(f"the run asks for {ask}, but it was given GPUs {given}")


def launch_devices(run: Row) -> list[str] | None:
    """The run's devices as a container's device request names them."""
    got = run_devices(run)
    return None if got is None else [str(i) for i in got]


def process_env(run: Row) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` for a process run: its devices, in nvidia-smi's numbering.

    A run that asked for none, on an agent that schedules GPUs, sees none, so it cannot
    use a device another run holds.
    """
    got = run_devices(run)
    if got is None:
        return {}
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in got),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def machine_status(store: Store) -> list[dict[str, Any]]:
    """``device_status`` for ``launchctl gpus``: the devices the machine's agents reported,
    or, before any has, those NVML or nvidia-smi find here; with this machine's memory use
    where a real device is known (to show use from outside launchctl)."""
    from launchctl.gpus.devices import discover, memory_used

    known = store.gpus.inventory()
    found = None if known else discover()[0]
    seen = bool(found) or any(row["source"] != "configured" for row in known)
    used = memory_used() if seen else None
    return device_status(store, found, used=used)


def device_status(
    store: Store,
    devices: list[Device] | None = None,
    *,
    host: str | None = None,
    used: dict[int, int] | None = None,
    busy_mb: int | None = None,
) -> list[dict[str, Any]]:
    """Each device with the runs on it, its reservation and its state, for tables and JSON.

    ``devices`` (one host's, as discovery found them) or else every device the store knows.
    """
    from launchctl.gpus.policy import DEFAULT_BUSY_MB

    threshold = DEFAULT_BUSY_MB if busy_mb is None else busy_mb
    if devices is not None:
        where = host or socket.gethostname()
        rows: list[dict[str, Any]] = [
            {"host": where, "idx": d.index, "name": d.name, "memory_mb": d.memory_mb}
            for d in devices
        ]
    else:
        rows = store.gpus.inventory()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for a in store.gpus.allocations():
        runs.setdefault((a["host"], a["idx"]), []).append(
            {"id": a["run_id"], "name": a["run_name"], "queue": a["queue_name"],
             "state": a["run_state"], "sharing": a["sharing"]}
        )  # fmt: skip
    reserved = {(r["host"], r["idx"]): r["run_id"] for r in store.gpus.reservations()}
    out = []
    for row in rows:
        key = (row["host"], row["idx"])
        on = runs.get(key, [])
        mine = used is not None and row["host"] == (host or socket.gethostname())
        used_mb = used.get(row["idx"]) if mine and used is not None else None
        outside = not on and used_mb is not None and used_mb > threshold
        state = "busy" if on else "used outside launchctl" if outside else "free"
        if key in reserved:
            state += f", reserved for {reserved[key]}"
        out.append(
            {"host": row["host"], "index": row["idx"], "name": row["name"],
             "memory_mb": row["memory_mb"], "used_mb": used_mb, "state": state,
             "runs": on, "reserved_for": reserved.get(key)}
        )  # fmt: skip
    return out


def agent_status(allocator: GpuAllocator) -> list[dict[str, Any]]:
    """``device_status`` for the devices an agent schedules, as its allocator sees them."""
    options = allocator.options
    return device_status(
        allocator.store, options.devices, host=allocator.host, used=allocator.used(),
        busy_mb=options.busy_mb,
    )  # fmt: skip
