"""slurm: each run is a Slurm batch job, submitted with ``sbatch --parsable``.

launchctl writes the batch script (in the run's folder), submits it, follows the job with
``scontrol show job`` (there may be no slurmdbd, so no ``sacct``) and cancels it with
``scancel``. The job carries the run id in its name (``launchctl-RUN``) and its comment
(``launchctl:RUN``), and its id is kept in the run's folder (``slurm_job``), so a restarted
agent adopts it by its Slurm id, or finds it by its comment.

Its output file is the run's log (``logs -f`` follows it as it grows). Code jobs run from
their working copy, copied to the queue's ``shared_dir`` (a folder the nodes see) when it
names one; image jobs run through the queue's ``container`` runtime on the node
(``docker run``, tested; ``apptainer`` and ``enroot`` written from their documentation).

How Slurm's job states become launchctl's: PENDING is "queued on the engine" (noted on the
run), RUNNING running, COMPLETED finished, FAILED / OUT_OF_MEMORY / TIMEOUT failed with that
reason, CANCELLED stopped, and PREEMPTED / NODE_FAIL / a requeue preempted: the Slurm job is
cancelled and the run goes back to its queue under launchctl's requeue rule (the same run
id, ``WANDB_RESUME=allow``, at most 5 times).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import RunnerError
from launchctl.masking import Masker
from launchctl.runenv import slurm_array_environment
from launchctl.runners.base import Exit, Launch
from launchctl.runners.registry import register
from launchctl.runners.slurm_options import OPTIONS, OptionError, config_problem, sbatch_args

SCRIPT = "slurm.sh"  # the batch script, in the run's folder
RAW_FILE = "slurm.out"  # a run with secrets: Slurm's output, before it is masked into the log
JOB_FILE = "slurm_job"  # the Slurm job id, in the run's folder: adoption reads it
EXIT_FILE = "slurm_exit"  # the command's exit code, written by the script on the node
COPY_FILE = "slurm_copy"  # where the code was copied under shared_dir (removed at the end)
POLL_S = 1.0
COMMAND_S = 30.0  # an sbatch/scontrol/scancel that takes longer: the controller is down
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# States of a job that has not ended; the rest are ended (or on their way to a requeue).
WAITING = {"PENDING", "CONFIGURING", "REQUEUE_HOLD", "RESV_DEL_HOLD"}
GOING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"}
PREEMPTED = {"PREEMPTED", "NODE_FAIL", "REQUEUED", "REQUEUE_FED", "BOOT_FAIL"}


def _slurm(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; a RunnerError in one line when it cannot run at all."""
    program = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/bin:/usr/local/bin")
    if program is None:
        raise RunnerError(f"{argv[0]} is not installed on this machine (slurm-client)")
    try:
        return subprocess.run(
            [program, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=COMMAND_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RunnerError(f"{argv[0]} did not answer in {COMMAND_S:g}s") from None
    except OSError as exc:
        raise RunnerError(f"could not run {argv[0]}: {exc.strerror}") from None


def job_info(job_id: str) -> dict[str, str] | None:
    """``scontrol show job -o ID`` as a dict; None once slurmctld no longer knows the job."""
    done = _slurm("scontrol", "show", "job", "-o", job_id)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise RunnerError(f"scontrol show job {job_id}: {_first(done.stderr)}")
    info: dict[str, str] = {}
    for token in done.stdout.split():
        key, sep, value = token.partition("=")
        if sep and key not in info:
            info[key] = value
    return info


def _first(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[0][:300]


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):  # it becomes a job name, a comment and a folder name
        raise RunnerError(f"run id {run_id[:40]!r} cannot name a Slurm job", stage="agent")
    return run_id


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _own_line(log: Path) -> str | None:
    """The last ``launchctl: ...`` line the batch script wrote (a missing runtime...)."""
    lines = [ln for ln in _tail(log).splitlines() if ln.startswith("launchctl: ")]
    return lines[-1].removeprefix("launchctl: ") if lines else None


def ended(job_id: str, info: dict[str, str], log: Path, stopping: bool) -> Exit:
    """How an ended Slurm job maps onto an Exit (``info``: its ``scontrol show job``)."""
    state = info.get("JobState", "UNKNOWN")
    code_text, _, sig_text = info.get("ExitCode", "0:0").partition(":")
    code = int(code_text) if code_text.isdigit() else None
    sig = int(sig_text) if sig_text.isdigit() and sig_text != "0" else None
    reason = info.get("Reason", "None")
    if state == "COMPLETED":
        return Exit(code=0)
    if state == "CANCELLED":
        if stopping:
            return Exit(code=None, message=f"Slurm job {job_id} cancelled")
        return Exit(code=None, cancelled=True, message=f"Slurm job {job_id} cancelled on Slurm")
    if state == "TIMEOUT":
        return Exit(
            code=None,
            message=f"timeout: Slurm job {job_id} ran past its time limit"
            f" ({info.get('TimeLimit')})",
        )
    tail = _tail(log)
    if state == "OUT_OF_MEMORY" or "exceeded job memory limit" in tail.lower():
        return Exit(
            code=None,
            message=f"out of memory: Slurm job {job_id} went past its memory limit and was killed",
        )
    if state in PREEMPTED:
        return Exit(code=None, preempted=True, message=f"Slurm job {job_id} {state.lower()}")
    own = _own_line(log)
    if own is not None and code == 127:
        return Exit(code=code, message=own)
    if state == "FAILED" and code not in (None, 0):
        return Exit(code=code, message=f"exit code {code} (Slurm job {job_id} FAILED)")
    why = f"Slurm job {job_id} {state}" + (f" ({reason})" if reason not in ("None", "") else "")
    if sig:
        why += f", signal {sig}"
    return Exit(code=None if code == 0 else code, message=why)


class Board:
    """One ``squeue`` for every job this agent follows, at most once per ``POLL_S``: an agent
    with hundreds of jobs asks slurmctld once a second, not once per job a second. Only the
    state, the reason, the node and the restart count (a requeue between two looks):
    ``scontrol show job`` is asked for the rest (the exit code) once a job looks ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -POLL_S
        self._rows: dict[str, dict[str, str]] = {}

    def get(self, job_id: str) -> dict[str, str] | None:
        with self._lock:
            if time.monotonic() - self._at >= POLL_S * 0.9:
                fmt = "JobID:|,State:|,Reason:|,NodeList:|,RestartCnt:"
                done = _slurm("squeue", "-h", "-t", "all", "-u", str(os.getuid()), "-O", fmt)
                if done.returncode != 0:
                    raise RunnerError(f"squeue: {_first(done.stderr)}")
                rows: dict[str, dict[str, str]] = {}
                for line in done.stdout.splitlines():
                    parts = [part.strip() for part in line.split("|")]
                    if len(parts) == 5:
                        keys = ("JobState", "Reason", "NodeList", "Restarts")
                        rows[parts[0]] = dict(zip(keys, parts[1:], strict=True))
                self._rows = rows
                self._at = time.monotonic()
            return self._rows.get(job_id)


BOARD = Board()


class SlurmJob:
    """A submitted run, followed by a thread that asks slurmctld every ``POLL_S``."""

    def __init__(
        self,
        job_id: str,
        log_path: Path,
        on_exit: Callable[[], None],
        copy: Path | None = None,
        masks: Sequence[str] = (),
    ) -> None:
        self.job_id = job_id
        self.pid: int | None = None
        self.pid_started: str | None = None
        self.container_id = f"Slurm job {job_id}"  # the start event's message
        self._log = log_path
        self._on_exit = on_exit
        # A job launchctl submitted is never requeued by Slurm without being cancelled (the
        # run is requeued by launchctl instead): any restart, even one that happened while
        # no agent watched, is a preemption.
        self._restarts = 0
        self._copy = copy  # the code's copy under shared_dir, removed once the run ended
        # A run with secrets: Slurm writes its output to RAW_FILE, copied here into its log,
        # masked (a run without writes its log directly).
        self._raw = log_path.parent / RAW_FILE if masks else None
        self._masks = list(masks)
        self._stopping = False
        self._exit: Exit | None = None
        self._state: str | None = None
        self._said: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        failures = 0
        while not self._done.is_set():
            try:
                result = self._check()
                failures = 0
                with contextlib.suppress(OSError):  # a full disk: the next pass tries again
                    self._copy_output(final=result is not None)
            except RunnerError as exc:
                failures += 1  # a controller restarting: keep asking, say so after a while
                result = None
                if failures == 60:
                    self._said = f"the Slurm controller does not answer: {exc}"
                    self._on_exit()
            if result is not None:
                self._exit = result
                self._done.set()
                self._on_exit()
                return
            self._done.wait(POLL_S)

    def _check(self) -> Exit | None:
        info: dict[str, str] | None = None
        if self._state in WAITING | GOING:  # the cheap look, shared by all this agent's jobs
            row = BOARD.get(self.job_id)
            if row is not None and row["JobState"] in WAITING | GOING:
                info = row
        if info is None:  # the first look, and whenever it may have ended: all of it
            info = job_info(self.job_id)
        if info is None:  # past MinJobAge: only the script's own note is left
            return _noted_exit(self._log.parent, self.job_id)
        output = self._raw or self._log
        state = info.get("JobState", "UNKNOWN")
        restarts = int(info.get("Restarts", "0") or 0)
        seen_running = self._state in GOING
        requeued = restarts > self._restarts or (seen_running and state in WAITING)
        if requeued and not self._stopping:
            # Requeued by Slurm (scontrol requeue, a preemption): launchctl's requeue rule
            # applies, so the Slurm copy is cancelled and the run goes back to its queue.
            _slurm("scancel", self.job_id)
            return Exit(
                code=None,
                preempted=True,
                message=f"Slurm job {self.job_id} was requeued on Slurm ({info.get('Reason')})",
            )
        new = state != self._state
        self._state = state
        if state in WAITING:
            reason = info.get("Reason", "None")
            self._said = f"queued on the engine: Slurm job {self.job_id} {state}" + (
                f" ({reason})" if reason != "None" else ""
            )
            if new:
                self._on_exit()  # wakes the agent, which notes it on the run
            return None
        if state in GOING:
            if self._said is not None and self._said.startswith("queued"):
                self._said = (
                    f"running on the engine: Slurm job {self.job_id} on {info.get('NodeList')}"
                )
                self._on_exit()
            return None
        return ended(self.job_id, info, output, self._stopping)

    def _copy_output(self, *, final: bool) -> None:
        """The new whole lines of the raw output (all of it at the end) into the log, masked;
        how far it got is kept beside it, so an adopting agent goes on from there."""
        if self._raw is None:
            return
        mark = self._raw.with_name(RAW_FILE + ".copied")
        try:
            done = int(mark.read_text().strip() or 0)
        except (OSError, ValueError):
            done = 0
        try:
            fd = os.open(self._raw, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        with os.fdopen(fd, "rb") as fh:
            fh.seek(done)
            data = fh.read()
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        masker = Masker(self._masks)
        text = masker.feed(data) + masker.flush()
        out = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "ab") as log:
            log.write(text)
        mark.write_text(f"{done + len(data)}\n")

    def engine_state(self) -> str | None:
        return self._said

    def poll(self) -> Exit | None:
        return self._exit if self._done.is_set() else None

    def stop(self, grace_s: float) -> None:
        if self._done.is_set() or self._stopping:
            return
        self._stopping = True
        # Slurm's own grace: SIGTERM now, SIGKILL after the cluster's KillWait.
        with contextlib.suppress(RunnerError):
            _slurm("scancel", self.job_id)

    def release(self) -> None:
        self._done.set()
        if self._raw is not None and self._exit is not None:  # copied, masked, to its end
            for path in (self._raw, self._raw.with_name(RAW_FILE + ".copied")):
                with contextlib.suppress(OSError):
                    path.unlink()  # the unmasked output is not kept
        if self._copy is not None:  # rmtree removes links, never follows them
            shutil.rmtree(self._copy, ignore_errors=True)


def _noted_exit(folder: Path, job_id: str) -> Exit:
    try:
        text = (folder / EXIT_FILE).read_text()[:16].strip()
    except OSError:
        text = ""
    if text.lstrip("-").isdigit():
        return Exit(code=int(text))
    return Exit(
        code=None,
        message=f"Slurm job {job_id} is no longer known to slurmctld (past its MinJobAge)"
        " and left no exit code",
    )


def _script(launch: Launch, options: dict[str, Any], folder: Path) -> str:
    """The batch script: the run's command (each word quoted), its exit code kept."""
    run_id = str(launch.run["id"])
    exit_file = shlex.quote(str(folder / EXIT_FILE))
    lines = [
        "#!/bin/sh",
        f"# launchctl run {run_id} (queue {launch.run.get('queue_name') or '(direct)'})",
        f"rm -f {exit_file}",
    ]
    if launch.image is None:
        lines.append(shlex.join(launch.command))
    else:
        lines += _container_lines(launch, str(options.get("container") or "docker"), run_id)
    lines += ["code=$?", f'echo "$code" > {exit_file}', 'exit "$code"', ""]
    return "\n".join(lines)


def _container_lines(launch: Launch, runtime: str, run_id: str) -> list[str]:
    """The script lines that run the image on the node, through ``runtime``."""
    assert launch.image is not None
    image = launch.image
    missing = (
        f"command -v {runtime} >/dev/null 2>&1 || {{ echo 'launchctl: {runtime} is not installed"
        f" on node '\"$(hostname)\"': the container runtime of the queue is {runtime}';"
        " exit 127; }"
    )
    passed = {**launch.env, **slurm_array_environment(launch.env)}  # as start() passes it
    names = [f"-e {shlex.quote(k)}" for k in sorted(passed)]
    if runtime == "docker":
        name = f"launchctl-{run_id}-$SLURM_JOB_ID"
        run = shlex.join(["docker", "run", "--rm", "--label", f"launchctl.run_id={run_id}"])
        return [
            missing,
            f'{run} --name "{name}" {" ".join(names)} {shlex.quote(image)}'
            f" {shlex.join(launch.command)} &",
            f"trap 'docker stop -t 5 \"{name}\" >/dev/null 2>&1' TERM INT",
            'wait $!; code=$?; wait $! 2>/dev/null && code=$?; (exit "$code")',
        ]
    if runtime == "apptainer":  # written from apptainer's documentation; untested here
        source = image if image.endswith(".sif") else f"docker://{image}"
        return [missing, shlex.join(["apptainer", "exec", source, *launch.command])]
    # enroot through pyxis (srun --container-image), from their documentation; untested here
    return [missing, shlex.join(["srun", f"--container-image={image}", *launch.command])]


def _lay_out(launch: Launch, options: dict[str, Any], run_id: str) -> Path:
    """Where the job starts: the working copy, copied under the queue's ``shared_dir``
    (links copied as links, never followed) when it names one."""
    shared = options.get("shared_dir")
    if launch.image is not None:
        return launch.log_path.parent  # the container has its own working directory
    if not shared:
        return launch.workdir
    root = Path(str(shared))
    if not root.is_absolute() or root.is_symlink() or not root.is_dir():
        raise RunnerError(f"slurm: shared_dir {shared} is not a folder here", stage="agent")
    code = launch.log_path.parent / "code"
    try:
        inner = launch.workdir.relative_to(code)
    except ValueError:
        inner = Path()
    target = root / run_id
    (launch.log_path.parent / COPY_FILE).write_text(f"{target}\n")
    try:
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.mkdir(mode=0o700)
        shutil.copytree(code, target / "code", symlinks=True)
    except OSError as exc:
        raise RunnerError(
            f"slurm: cannot lay out the code in {target}: {exc.strerror or exc}", stage="agent"
        ) from None
    return target / "code" / inner


def _copy_of(folder: Path) -> Path | None:
    """The code's copy under shared_dir this run's start made (its path kept in its folder)."""
    try:
        text = (folder / COPY_FILE).read_text().strip()
    except OSError:
        return None
    return Path(text) if text.startswith("/") else None


def _check_config(config: dict[str, Any]) -> str | None:
    return config_problem(config)


@register(options=OPTIONS, check_config=_check_config, builds=False)
class SlurmRunner:
    resource = "slurm"

    def start(self, launch: Launch) -> SlurmJob:
        run_id = _check_run_id(str(launch.run["id"]))
        if not launch.command and launch.image is None:
            raise RunnerError("the run has no command to execute", stage="agent")
        options = dict(launch.resource_args)
        try:
            args = sbatch_args(options, launch.limits)
        except OptionError as exc:
            raise RunnerError(f"the run breaks its queue's rules: {exc}", stage="agent") from None
        if launch.limits.max_run_time is not None:
            # Slurm enforces it (it became --time), counted from when the job starts running.
            # The agent's own deadline (read from the Launch once start returns) would count
            # the time the job waited in Slurm's queue too, and stop a job that never ran.
            launch.limits.max_run_time = None
        folder = launch.log_path.parent
        for stale in (COPY_FILE, RAW_FILE, RAW_FILE + ".copied"):  # an earlier attempt's
            with contextlib.suppress(FileNotFoundError):
                (folder / stale).unlink()
        output = launch.log_path
        if launch.secrets:  # Slurm writes here (private), the agent masks it into the log
            output = folder / RAW_FILE
            os.close(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        chdir = _lay_out(launch, options, run_id)
        script = folder / SCRIPT
        with contextlib.suppress(FileNotFoundError):
            script.unlink()
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write(_script(launch, options, folder))
        env = dict(launch.env)
        env.update(slurm_array_environment(env))  # issue 18: a run of launch --array
        env.setdefault("PATH", os.environ.get("PATH", os.defpath))
        for key in ("SLURM_CONF", "HOME", "USER"):  # how sbatch itself finds its cluster
            if key in os.environ:
                env.setdefault(key, os.environ[key])
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name=launchctl-{run_id}",
            f"--comment=launchctl:{run_id}",
            f"--output={output}",
            "--open-mode=append",
            f"--chdir={chdir}",
            "--export=ALL",
            *args,
            str(script),
        ]
        program = shutil.which("sbatch", path=env["PATH"]) or shutil.which("sbatch")
        if program is None:
            raise RunnerError("sbatch is not installed on this machine (slurm-client)")
        try:
            done = subprocess.run(
                [program, *argv[1:]],
                capture_output=True,
                text=True,
                timeout=COMMAND_S,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RunnerError(f"sbatch did not answer in {COMMAND_S:g}s") from None
        if done.returncode != 0:
            raise RunnerError(f"sbatch refused the job: {_first(done.stderr)}")
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise RunnerError(f"sbatch gave no job id: {_first(done.stdout)}")
        (folder / JOB_FILE).write_text(job_id + "\n")
        copy = _copy_of(folder)
        return SlurmJob(job_id, launch.log_path, launch.on_exit, copy, launch.secrets)

    def adopt(
        self,
        run: dict[str, Any],
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
    ) -> SlurmJob | Exit | None:
        """A lost agent's run: its Slurm job by the id kept in its folder, else by its
        comment (``launchctl:RUN``); None when Slurm has no such job."""
        run_id = _check_run_id(str(run["id"]))
        folder = log_path.parent
        try:
            job_id: str | None = (folder / JOB_FILE).read_text().strip() or None
        except OSError:
            job_id = None
        if job_id is None or not job_id.isdigit():
            job_id = _by_comment(run_id)
        if job_id is None:
            return None
        info = job_info(job_id)
        if info is None:
            return _noted_exit(folder, job_id) if (folder / EXIT_FILE).exists() else None
        if info.get("Comment") not in (f"launchctl:{run_id}", None):
            return None  # another job got that id (a cluster that was reset)
        masks = secrets if (folder / RAW_FILE).exists() else ()
        return SlurmJob(job_id, log_path, on_exit, _copy_of(folder), masks)


def _by_comment(run_id: str) -> str | None:
    done = _slurm("squeue", "-h", "-t", "all", "-o", "%i|%k")
    for line in done.stdout.splitlines():
        job, _, comment = line.partition("|")
        if comment.strip() == f"launchctl:{run_id}":
            return job.strip()
    return None
