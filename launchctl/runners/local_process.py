"""local-process: run the entry point as a process group on this machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

from launchctl.runners.base import Exit, Launch, RunnerError


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell pids apart later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


class ProcessHandle:
    def __init__(self, proc: subprocess.Popen[bytes], on_exit: object) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self.pid_started = process_start_time(proc.pid)
        self._killer: threading.Timer | None = None
        self._waiter = threading.Thread(target=self._wait, args=(on_exit,), daemon=True)
        self._waiter.start()

    def _wait(self, on_exit: object) -> None:
        self.proc.wait()
        if self._killer is not None:
            self._killer.cancel()
        # The leader is gone; end anything it left behind in its group.
        self._signal_group(signal.SIGKILL)
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
        try:
            with open(launch.log_path, "ab", buffering=0) as log:
                proc = subprocess.Popen(
                    command,
                    cwd=launch.workdir,
                    env=launch.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so cancel reaches children
                )
        except FileNotFoundError:
            raise RunnerError(f"command not found: {launch.command[0]}") from None
        except PermissionError:
            raise RunnerError(f"permission denied running {launch.command[0]}") from None
        except OSError as exc:
            raise RunnerError(f"could not start {launch.command[0]}: {exc.strerror}") from None
        if limits.cpus is not None:
            _pin_cpus(proc.pid, limits.cpus)
        return ProcessHandle(proc, launch.on_exit)


def _pin_cpus(pid: int, cpus: float) -> None:
    """Limit a process to ``ceil(cpus)`` of the cores this agent may use (its children too)."""
    import math

    allowed = sorted(os.sched_getaffinity(0))
    wanted = set(allowed[: max(1, math.ceil(cpus))])
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, wanted)
