"""`launchctl gpus`: each GPU of the machine with the run on it; and the device table an
agent prints when it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, err, table

if TYPE_CHECKING:
    from launchctl.gpus.allocator import GpuAllocator


def gpus(as_json: bool = JSON_OPTION) -> None:
    """Show each GPU with the runs on it, as the agents allocated them.

    The devices are those the machine's agents reported (NVML, nvidia-smi or their
    --gpus list); before any agent has, those NVML or nvidia-smi find here.

    \b
    Example:
      launchctl gpus
      launchctl gpus --json
    """
    from launchctl.gpus import machine_status

    status = machine_status(open_store())
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


def startup_lines(allocator: GpuAllocator) -> list[str]:
    """The device table an agent prints at start: index, name, memory, free or busy."""
    from launchctl.gpus import agent_status

    options = allocator.options
    status = agent_status(allocator)
    lines = [
        f"GPUs ({options.source}): {len(status)}; busy above {options.busy_mb} MiB used"
        f" outside launchctl; backfill bound {options.backfill_s:g} s"
    ]
    width = max(len(s["name"]) for s in status)
    for s in status:
        memory = f"{s['memory_mb']} MiB" if s["memory_mb"] is not None else "-"
        held = ", ".join(r["id"] for r in s["runs"])
        lines.append(
            f"  GPU {s['index']:<3} {s['name']:<{width}}  {memory:>10}  {s['state']}"
            + (f" ({held})" if held else "")
        )
    return lines


def gpus_off_line(flag: str | None) -> str:
    """The banner's line for an agent that schedules no GPUs, and what that means."""
    why = f"--gpus {flag}" if flag is not None else "no GPU found by NVML or nvidia-smi"
    return (
        f"GPU scheduling is off ({why}): runs that ask for GPUs are left waiting for an"
        " agent that has them (with --burst they fail)"
    )
