"""local-process: run the entry point as a process group on this machine.

Its output goes straight into the run's log file, unless the run has secrets: then it
goes through a pipe to a small copier process that masks their values (``***``) on the
way. The copier is its own process, apart from the agent and from the run's group, so
the run keeps running and logging if its agent dies; it ends by itself when the run's
output ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from launchctl.runners.base import Exit, Launch, RunnerError

# After the run's process group is gone, how long its log copier may take to finish (a
# process that left the group can hold the pipe open); then it is stopped.
DRAIN_S = 10.0
_CHUNK = 65536


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell pids apart later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def start_masked_copy(
    log_path: Path, secrets: Sequence[str]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the copier from a new pipe into ``log_path``; returns it and the pipe's write end.

    The values reach it through a pipe of their own, never its command line or environment.
    """
    out_r, out_w = os.pipe()
    sec_r, sec_w = os.pipe()
    try:
        copier = subprocess.Popen(
            [sys.executable, "-c", _COPIER, str(log_path), str(sec_r)],
            stdin=out_r,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(sec_r,),
            start_new_session=True,  # not in the run's group, which is killed when it ends
        )
    except OSError as exc:
        for fd in (out_r, out_w, sec_r, sec_w):
            os.close(fd)
        raise RunnerError(
            f"could not start the log copier: {exc.strerror}", stage="agent"
        ) from None
    os.close(out_r)
    os.close(sec_r)
    try:
        with open(sec_w, "wb") as fh:
            fh.write(json.dumps(list(secrets)).encode("utf-8"))
    except OSError:
        os.close(out_w)
        copier.kill()
        copier.wait()
        raise RunnerError("the log copier ended before it got its values", stage="agent") from None
    return copier, out_w


_COPIER = "from launchctl.runners.local_process import copy_masked; copy_masked()"


def copy_masked(argv: Sequence[str] | None = None) -> None:
    """The copier process: stdin, masked, appended to the log file, until end of input."""
    from launchctl.secrets import Masker

    log_path, secrets_fd = argv or sys.argv[1:3]
    with os.fdopen(int(secrets_fd), "rb") as fh:
        masker = Masker(json.loads(fh.read().decode("utf-8")))
    broken = False
    with open(log_path, "ab", buffering=0) as log:
        while chunk := os.read(0, _CHUNK):
            out = masker.feed(chunk)
            if out and not broken:
                try:
                    log.write(out)
                except OSError:  # a full disk: keep draining, so the run gets no SIGPIPE
                    broken = True
        if not broken:
            with contextlib.suppress(OSError):
                log.write(masker.flush())


class ProcessHandle:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        on_exit: object,
        copier: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self.pid_started = process_start_time(proc.pid)
        self._killer: threading.Timer | None = None
        self._copier = copier
        self._waiter = threading.Thread(target=self._wait, args=(on_exit,), daemon=True)
        self._waiter.start()

    def _wait(self, on_exit: object) -> None:
        self.proc.wait()
        if self._killer is not None:
            self._killer.cancel()
        # The leader is gone; end anything it left behind in its group.
        self._signal_group(signal.SIGKILL)
        # The exit is reported only once the log holds everything the run printed: the
        # copier ends at the end of the output, when the last process holding it is gone.
        if self._copier is not None:
            try:
                self._copier.wait(timeout=DRAIN_S)
            except subprocess.TimeoutExpired:  # held open by a process that left the group
                self._copier.kill()
                self._copier.wait()
        if callable(on_exit):
            on_exit()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def poll(self) -> Exit | None:
        if self._waiter.is_alive():
            return None
        code = self.proc.returncode
        if code is None:  # pragma: no cover - the waiter has returned
            return None
        if code < 0:
            sig = -code
            return Exit(code=None, signal=sig, message=f"killed by {signal.Signals(sig).name}")
        return Exit(code=code)

    def stop(self, grace_s: float) -> None:
        if not self._waiter.is_alive() or self._killer is not None:
            return
        self._signal_group(signal.SIGTERM)
        self._killer = threading.Timer(grace_s, self._signal_group, args=(signal.SIGKILL,))
        self._killer.daemon = True
        self._killer.start()


class LocalProcessRunner:
    resource = "local-process"

    def start(self, launch: Launch) -> ProcessHandle:
        if not launch.command:
            raise RunnerError("the run has no command to execute", stage="agent")
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = list(launch.command)
        limits = launch.limits
        if limits.memory is not None:
            # ulimit semantics: the address space of the run and everything it starts.
            kib = max(1, limits.memory // 1024)
            command = ["/bin/sh", "-c", f'ulimit -v {kib} && exec "$@"', "launchctl-run", *command]
        copier, out_w = None, None
        if launch.secrets:  # output goes through a masking copier; else straight to disk
            copier, out_w = start_masked_copy(launch.log_path, launch.secrets)
        try:
            proc = _popen(command, launch, out_w)
        except RunnerError:
            if copier is not None:
                copier.kill()
                copier.wait()
            raise
        finally:
            if out_w is not None:
                os.close(out_w)  # the run holds it now; the copier ends when its output does
        if limits.cpus is not None:
            _pin_cpus(proc.pid, limits.cpus)
        return ProcessHandle(proc, launch.on_exit, copier)


def _popen(command: list[str], launch: Launch, out_fd: int | None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, its output to ``out_fd`` or the log."""
    try:
        with open(launch.log_path, "ab", buffering=0) as log:
            return subprocess.Popen(
                command,
                cwd=launch.workdir,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=log if out_fd is None else out_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so cancel reaches children
            )
    except FileNotFoundError:
        raise RunnerError(f"command not found: {launch.command[0]}") from None
    except PermissionError:
        raise RunnerError(f"permission denied running {launch.command[0]}") from None
    except OSError as exc:
        raise RunnerError(f"could not start {launch.command[0]}: {exc.strerror}") from None


def _pin_cpus(pid: int, cpus: float) -> None:
    """Limit a process to ``ceil(cpus)`` of the cores this agent may use (its children too)."""
    import math

    allowed = sorted(os.sched_getaffinity(0))
    wanted = set(allowed[: max(1, math.ceil(cpus))])
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, wanted)
