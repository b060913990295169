"""The log copier: a run's output, masked, appended to its log, in a process of its own.

The agent starts it as a script, ``python -I -S copier.py LOG CONTROL_FD``, once per
process run. Without ``site`` and without the package's imports it starts in about 10 ms
instead of about 50 ms, which is what a run of a trivial command costs end to end; so it
loads the three standard-library-only modules it needs (masking, procfs, logfile) from
their files. Imported as ``launchctl.runners.copier`` it uses the package as usual.

Protocol on CONTROL_FD: one JSON line ``{"secrets": [...]}`` before the run starts, then
``{"group": PID, "run_id": ID}`` once it has. A write that fails (a full disk, a quota)
stops the run's group, cuts the log to free space, records why beside it, and ends with
``EXIT_DISK_FULL`` or ``EXIT_LOG_FAILED`` once the run's output is drained.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

EXIT_LOG_FAILED = 74  # the log could not be written (sysexits' EX_IOERR)
EXIT_DISK_FULL = 75  # ... because the disk (or the user's quota) is full
CHUNK = 65536


def read_line(fh: Any, read_all: bool = False) -> dict[str, Any]:
    """One JSON object from the control pipe; {} for anything else."""
    raw = fh.read() if read_all else fh.readline()
    try:
        value = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    """masking, procfs and logfile: from the package when imported, else from their files."""
    if __package__:
        from launchctl import masking, procfs
        from launchctl.runners import logfile

        return masking, procfs, logfile
    package = Path(__file__).resolve().parent.parent
    return (
        _load("_launchctl_masking", package / "masking.py"),
        _load("_launchctl_procfs", package / "procfs.py"),
        _load("_launchctl_logfile", package / "runners" / "logfile.py"),
    )


def main(argv: list[str] | None = None) -> None:
    masking, procfs, logfile = _modules()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit: an error, not death
    log_path, control_fd = argv or sys.argv[1:3]
    control = os.fdopen(int(control_fd), "rb")
    masker = masking.Masker(read_line(control).get("secrets") or [])  # before the run starts
    failed: OSError | None = None
    with open(log_path, "ab", buffering=0) as log:
        while chunk := os.read(0, CHUNK):
            out = masker.feed(chunk)
            if out and failed is None:
                try:
                    logfile.write_all(log.fileno(), out)
                except OSError as exc:  # keep draining after it, so nothing gets SIGPIPE
                    failed = exc
                    # The note first (the run is blocked on the pipe meanwhile), so an
                    # agent that sees the run end finds why.
                    logfile.give_back_space(log.fileno(), Path(log_path), exc)
                    run = read_line(control, read_all=True)  # sent once the run started
                    _stop_group(procfs, run.get("group"), run.get("run_id"))
        if failed is None:
            try:
                logfile.write_all(log.fileno(), masker.flush())
            except OSError as exc:
                failed = exc
                logfile.give_back_space(log.fileno(), Path(log_path), exc)
    if failed is not None:
        sys.exit(EXIT_DISK_FULL if logfile.disk_full(failed) else EXIT_LOG_FAILED)


def _stop_group(procfs: ModuleType, group: Any, run_id: Any) -> None:
    """Kill the run's process group, if it is still that run's (its pid not reused)."""
    if not (isinstance(group, int) and isinstance(run_id, str) and procfs.live(group)):
        return
    if f"LAUNCHCTL_RUN_ID={run_id}".encode() in procfs.read(group, "environ").split(b"\0"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    main()
