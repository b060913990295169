"""What /proc says about a process: alive (not a zombie), its start time, its files.

Used to tell a live process from a dead or reused pid after an agent was lost.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    # One open and read (issue 17: read at every run's start), as bytes: the command name
    # is whatever bytes the process gave itself, and may hold spaces and parentheses.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The fields after the command name follow its last ')'.
    return stat.rpartition(b")")[2].decode("ascii", "replace").split()


def live(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie has)."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and its parent has not reaped it yet."""
    fields = _stat_fields(pid)
    return bool(fields) and fields is not None and fields[0] == "Z"


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
