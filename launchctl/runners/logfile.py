"""Writing a run's log, and what happens when it cannot be written.

A full disk (or quota) stops the run: the log is cut to its first ``KEEP_ON_FAILURE``
bytes to give the space back, the reason goes at its end and into a note beside it
(``LOG_ERROR_FILE``), and the run fails with that reason: "disk full: ...". One run that
fills the disk must not take the agent, or the other runs, down with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# The log's start (usually what explains the run) is kept; the rest is freed.
KEEP_ON_FAILURE = 1 << 20
LOG_ERROR_FILE = "log_error"


def open_log(path: Path | str, *, append: bool = False) -> int:
    """A descriptor of the run's log for reading (or, ``append``, for adding a line) that
    never blocks and never follows a link: the run may have replaced its log with a FIFO
    (opening one waits for a partner for ever) or a link. OSError when it is not a plain
    file, as when it is missing."""
    flags = (os.O_WRONLY | os.O_APPEND) if append else os.O_RDONLY
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_log(path: Path | str) -> BinaryIO:
    """The run's log opened for reading (see ``open_log``)."""
    return os.fdopen(open_log(path), "rb")


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a short write is followed by the rest, or by its error."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_room(folder: Path, least: int = 64 * 1024) -> bool:
    """Whether the file system of ``folder`` has less than ``least`` bytes free for us
    (root may use the blocks kept back for it; others may not)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < least


def failure(exc: OSError) -> str:
    """Why a run failed when its log could not be written, in words for ``runs show``."""
    what = exc.strerror or type(exc).__name__
    if disk_full(exc):
        return f"disk full: the run's log could not be written ({what}); the run was stopped"
    return f"the run's log could not be written ({what}); the run was stopped"


def give_back_space(fd: int, log_path: Path, exc: OSError, *, note: bool = True) -> str:
    """Cut the log open on ``fd`` to its first ``KEEP_ON_FAILURE`` bytes and say why at its
    end (and, with ``note``, in ``LOG_ERROR_FILE`` beside it). Returns the reason."""
    reason = failure(exc)
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size > KEEP_ON_FAILURE:
            os.ftruncate(fd, KEEP_ON_FAILURE)
            reason += f"; its log was cut to its first {KEEP_ON_FAILURE >> 20} MiB to free space"
        write_all(fd, f"\nlaunchctl: {reason}\n".encode())
    if note:
        with contextlib.suppress(OSError):
            (log_path.parent / LOG_ERROR_FILE).write_text(reason + "\n")
    return reason


def read_note(folder: Path) -> str | None:
    """The note that a run's log could not be written, if one was left in ``folder``."""
    try:
        with open(folder / LOG_ERROR_FILE, "rb") as fh:
            text = fh.read(1000).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None


def mtime(path: Path) -> float | None:
    """When ``path`` was last written (a run's exit-code or pid file); None if it is not
    there. For a run that ended, or started, while no agent watched it."""
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return None


def append_line(path: Path, text: str) -> bool:
    """Append one line to an existing log (never create one, never through a link), on a
    line of its own; returns whether it was written. A write error is left to the run."""
    try:
        fd = open_log(path, append=True)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        lead = b""
        if size:
            with read_log(path) as fh:
                fh.seek(size - 1)
                lead = b"" if fh.read(1) == b"\n" else b"\n"
        write_all(fd, lead + text.encode() + b"\n")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
