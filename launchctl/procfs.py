"""What /proc says about a process: alive (not a zombie), its start time, its files.

Used to tell a live process from a dead or reused pid after an agent was lost.
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the last ')'.
    return stat.rsplit(")", 1)[1].split()


def live(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie has)."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell pids apart."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def read(pid: int, name: str) -> bytes:
    """``/proc/PID/NAME`` (``cmdline``, ``environ``); empty when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""
