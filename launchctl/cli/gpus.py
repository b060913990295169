"""`launchctl gpus`: each GPU of the machine with the run on it."""

from __future__ import annotations

from typing import Any

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, err, table


def gpus(as_json: bool = JSON_OPTION) -> None:
    """Show each GPU with the runs on it, as the agents allocated them.

    The devices are those the machine's agents reported (NVML, nvidia-smi or their
    --gpus list); before any agent has, those NVML or nvidia-smi find here.

    \b
    Example:
      launchctl gpus
      launchctl gpus --json
    """
    from launchctl.gpus import device_status
    from launchctl.gpus.devices import discover, memory_used

    store = open_store()
    known = store.gpus.inventory()
    found = None if known else discover()[0]
    seen = bool(found) or any(row["source"] != "configured" for row in known)
    used = memory_used() if seen else None  # this machine's, to show use from outside
    status = device_status(store, found, used=used)
    if as_json:
        emit_json(status)
        return
    if not status:
        err(
            "no GPUs known: no agent has reported any, and neither NVML nor nvidia-smi"
            " finds one here (start an agent with --gpus 0,1,... to schedule a list)"
        )
        return
    table((_cells(s) for s in status), ["host", "gpu", "name", "memory", "state", "runs"])


def _cells(s: dict[str, Any]) -> list[Any]:
    """One table row: host, index, name, memory, state, the runs on it."""
    memory = f"{s['memory_mb']} MiB" if s["memory_mb"] is not None else None
    if s["used_mb"] is not None and memory:
        memory = f"{s['used_mb']}/{memory}"
    runs = ", ".join(f"{r['id']} ({r['name']}, {r['queue'] or 'direct'})" for r in s["runs"])
    return [s["host"], s["index"], s["name"], memory, s["state"], runs or None]
