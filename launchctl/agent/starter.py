"""Turn a claimed run into a started one: the orchestrator around the run's plan.

It reads what the run needs once (its job version and queue, the roles, the secrets, the
run_as account), plans the run (``launchctl.agent.plan``: pure, no IO), lays out its
working copy or builds its image, moves its state and starts its runner.

Runs in a worker thread of the agent (a build can take minutes; the loop must keep
reaping, renewing leases and passing on cancels meanwhile), with its own store
connection.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchctl import jobfiles, paths, runas, runners
from launchctl.agent import workspace
from launchctl.agent.plan import AgentContext, Plan, plan
from launchctl.errors import LaunchctlError, StoreBusy, stage_of
from launchctl.history import attempts
from launchctl.masking import Masker
from launchctl.resolve import check_host_paths
from launchctl.runners import Handle, Launch, RunnerError, logfile
from launchctl.secrets import MissingSecret, SecretStore
from launchctl.states import State, move
from launchctl.store import Row, Store

BUILD_LOG = "build.log"  # BuildKit's raw output, beside the run's output.log


@dataclass
class Started:
    handle: Handle
    max_run_time: float | None  # seconds; the agent stops the run past it
    # Issue 17: nothing slow will be done for the next run of the same job version: a
    # local process whose working copy comes from a snapshot this process keeps
    # unpacked (or no job at all), no clone, no build. Such runs start in the agent's loop.
    quick: bool = False
    # The move to running's fields (``running_fields``) when the caller makes that move:
    # read when it does (a spawned run's pid comes from its spawner meanwhile).
    running: Callable[[], dict[str, Any]] | None = None


@dataclass
class Ready:
    """A run prepared to start: its move to starting made, its process not yet started."""

    run: Row
    launch: Launch
    secrets: list[str]  # the values its errors are masked with
    quick: bool  # see ``Started.quick``


class Cancelled(Exception):
    """The run was cancelled before it could start."""


@dataclass
class StartContext:
    agent_id: str
    env: dict[str, str]  # the agent config's env
    builder: dict[str, Any]  # the agent config's builder section
    registry: Any  # the agent config's registry
    on_exit: Callable[[], None]
    progress: bool = False
    secure_mode: bool = False  # the agent config's (W&B's): no entry point overrides
    say: Callable[[str], None] | None = None  # the agent's terminal: build steps as they go


def agent_context(ctx: StartContext, home: Path) -> AgentContext:
    """What every plan gets from the agent: its config, and this process's environment now."""
    return AgentContext(
        agent_id=ctx.agent_id,
        home=home,
        environ=environ_now(),
        env=dict(ctx.env),
        builder=dict(ctx.builder),
        registry=ctx.registry,
        python_bindir=os.path.dirname(sys.executable),
    )


_ENVIRON: tuple[dict[Any, Any], dict[str, str]] = ({}, {})  # (raw, decoded) last read


def environ_now() -> dict[str, str]:
    """A copy of this process's environment as it is now.

    Issue 17: decoding every variable cost tens of microseconds a run; the raw bytes are
    copied and compared instead (both in C), and decoded again only when they changed.
    """
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):
        return dict(os.environ)
    global _ENVIRON
    last_raw, last = _ENVIRON
    if raw != last_raw:
        last_raw, last = dict(raw), dict(os.environ)
        _ENVIRON = (last_raw, last)
    return dict(last)


def read_secrets(names: list[str], *, missing_ok: bool = False) -> dict[str, str]:
    """The values of the secrets a run needs, by name, from one read at run start.

    A missing secret (unless ``missing_ok``: then it is left out) or an unsafe secrets
    file fails the run at stage agent, naming the secret, never a value.
    """
    if not names:
        return {}
    try:
        return SecretStore().get_many(names)
    except MissingSecret as exc:
        if not missing_ok:
            raise
        present = [n for n in names if n not in exc.names]
        return SecretStore().get_many(present) if present else {}


@contextlib.contextmanager
def masked_errors(values: list[str]) -> Iterator[None]:
    """An error raised inside reaches the run record with ``values`` (filled in meanwhile,
    once the secrets are read) replaced by ``***``: a runner's message can quote the env."""
    try:
        yield
    except (Cancelled, StoreBusy):  # no run's text in either: the run is not failed for them
        raise
    except Exception as exc:
        if not values:
            raise
        raise _masked(exc, Masker(values)) from None


def _masked(exc: Exception, masker: Masker) -> RunnerError:
    """``exc`` as the RunnerError the agent would record for it (at the same stage), with
    the values masked."""
    if isinstance(exc, LaunchctlError):
        return RunnerError(masker.mask_text(str(exc)), stage=stage_of(exc))
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return RunnerError(f"internal error: {masker.mask_text(detail)}", stage="agent")


class Starter:
    def __init__(self, store: Store, ctx: StartContext) -> None:
        self.store = store
        self.ctx = ctx
        self.agent = agent_context(ctx, store.root)

    def start(self, run: Row) -> Started:
        """Check, lay out, build if needed, and start ``run``; returns the runner's handle."""
        return self.launch(self.prepare(run))

    def prepare(self, run: Row, *, in_claim: bool = False) -> Ready:
        """Everything before the run's process: check, lay out or build, and the move to
        starting. The agent's loop does this for a quick run inside the transaction that
        claimed it (one commit for both), then ``launch``es it once that has committed.

        ``in_claim``: ``run`` was read in the write transaction this runs in (its claim),
        so its ``cancel_requested`` is current and is not read again.
        """
        secrets: list[str] = []  # filled in once read; every error after that is masked
        with masked_errors(secrets):
            return self._prepare(run, secrets, in_claim)

    def launch(self, ready: Ready, *, record: bool = True) -> Started:
        """Start a prepared run's process (its move to starting committed) and record it
        running; returns the runner's handle. ``record`` False: the move to running is left
        to the caller (``Started.running`` has its fields): the agent's loop makes it in
        its next commit, with other moves."""
        with masked_errors(ready.secrets):
            return self._launch(ready, record)

    def _prepare(self, run: Row, secrets: list[str], in_claim: bool = False) -> Ready:
        run_id = run["id"]
        version, queue = self._read(run)
        given = (run["spec"].get("overrides") or {}).get("entry_point")
        if self.ctx.secure_mode and given and (version is None or given != version["entrypoint"]):
            # W&B's agent in secure_mode (agent.py, _assert_secure) refuses the same run.
            # `launch -u DIR -E CMD` records CMD as an override of the job it makes with
            # that same entry point: that changes nothing, and is not refused.
            raise RunnerError(
                "the agent runs in secure_mode: a run may not override its job's entry point"
                " (overrides.entry_point, launch -E); launch the job with its own entry point",
                stage="agent",
            )
        planned = plan(run, version, queue, self.agent)
        _check_host_paths(planned)
        # Secrets are read before anything slow (a build), so a missing one fails at once.
        by_name = read_secrets(planned.secret_names)
        secrets.extend(planned.masks(by_name))
        run_as = self._run_as(planned)
        fresh = self._make_folder(planned, run_as)
        if not fresh or run["resume_count"] or run["retries"]:
            mark_attempt(self.store, run, planned.log_path)
        notes: list[str] = []
        left = State.CLAIMED  # the state the move to starting leaves (one: no read first)
        if planned.process:
            notes.append(workspace.prepare(self.store, run, version, planned.workdir, fresh=fresh))
            if run_as is not None:
                runas.hand_over(planned.workdir, run_as)
                notes.append(f"runs as user {run_as.name}")
        elif planned.build is not None:
            planned = planned.with_image(self._build(planned, by_name, notes))
            left = State.BUILDING
            _check_host_paths(planned)  # rendered again: ${image_uri} is the image built
        for name in sorted(planned.unknown):
            self.store.runs.note(run_id, f"warning: unknown macro ${{{name}}} left as written")
        launch = planned.launch(by_name, run_as=run_as, on_exit=self.ctx.on_exit)
        launch.fresh = fresh
        if not in_claim:  # else the caller checked the row, read in this transaction
            self._check_cancel(run_id)
        move(self.store, run_id, State.STARTING, agent_id=self.ctx.agent_id,
             message="; ".join(notes) or None, workdir=str(launch.workdir),
             log_path=str(launch.log_path), image=launch.image,
             expect=frozenset({left}))  # fmt: skip
        return Ready(run, launch, secrets, quick=_quick(planned, version))

    def _launch(self, ready: Ready, record: bool) -> Started:
        run_id, launch = ready.run["id"], ready.launch
        handle = runners.get(ready.run["resource"]).start(launch)
        at = time.time()
        started = Started(handle, launch.limits.max_run_time, quick=ready.quick)
        if not record:
            started.running = lambda: running_fields(handle, at)
            return started
        try:
            self._record_running(run_id, running_fields(handle, at))
        except StoreBusy:
            # The run's process runs, but the store could not say so: it is stopped, so
            # the run can go back to its queue with no second process beside a first.
            _stop_unrecorded(handle)
            raise
        return started

    def _record_running(self, run_id: str, running: dict[str, Any]) -> None:
        """STARTING -> RUNNING, tried again while another writer holds the store."""
        for attempt in range(3):
            try:
                move(self.store, run_id, State.RUNNING, agent_id=self.ctx.agent_id,
                     expect=frozenset({State.STARTING}), **running)  # fmt: skip
                return
            except StoreBusy:
                if attempt == 2:
                    raise

    def _read(self, run: Row) -> tuple[Row | None, Row | None]:
        """The run's job version and queue, read once, and the roles the store keeps checked:
        the launcher may still launch into the queue, the job's author still writes for the
        run's entities (the same rules as at launch, ``teams`` and ``jobs`` own them).
        Checked before the plan, so nothing is rendered for a run its launcher may not make.
        """
        version = (
            self.store.jobs.version_by_id(run["job_version_id"])
            if run["job_version_id"] is not None
            else None
        )
        if version is None and run["spec"].get("job"):
            # Deleted with --force since (a rerun of a run it made, queued by a launchctl
            # that did not refuse it): its command would run in an empty folder.
            raise RunnerError(
                f"its job {run['spec']['job']} no longer exists (deleted)", stage="agent"
            )
        queue = self.store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
        if run["queue_id"] is not None and queue is None:
            raise RunnerError(f"queue '{run['queue_name']}' no longer exists", stage="agent")
        try:
            if queue is not None:
                from launchctl import teams

                teams.check_launch(self.store, queue, run["spec"], run["spec"].get("author"))
            if version is not None:  # written by a member of the run's entities, now
                from launchctl import jobs

                jobs.check_version_author(
                    self.store, version, run_entity=run["entity"], queue=queue
                )
        except LaunchctlError as exc:
            raise RunnerError(f"the run breaks its queue's rules: {exc}", stage="agent") from None
        return version, queue

    def _run_as(self, planned: Plan) -> runas.RunAs | None:
        """The user the queue's runs run as (``run_as``, as its admin wrote it), checked here."""
        if planned.run_as is None:
            return None
        return runas.for_run(planned.run_as, str(planned.run["queue_name"]))

    def _make_folder(self, planned: Plan, run_as: runas.RunAs | None) -> bool:
        """The run's folder and its (empty) log, private like the rest of the store.
        Returns whether the folder was made now (else an earlier attempt made it).

        ``runs/`` may be searched by anyone (never listed): a run_as run must reach its own
        folder, which is then searchable too; everything in them stays 0600 / 0700.
        """
        folder = planned.folder
        try:
            parent = str(folder.parent)
            if parent not in _MADE:  # once per agent (issue 17: two syscalls a run)
                paths.make_dir(folder.parent, paths.dir_mode() | 0o111)
                _MADE.add(parent)
            fresh = paths.make_dir(folder)
            if run_as is not None:
                folder.chmod(stat.S_IMODE(folder.stat().st_mode) | 0o111)
                runas.check_reachable(folder, run_as)
            paths.make_file(planned.log_path)
        except OSError as exc:
            raise RunnerError(
                f"cannot make the run's folder {folder}: {exc.strerror or exc}", stage="agent"
            ) from None
        return fresh

    def _check_cancel(self, run_id: str) -> None:
        if self.store.runs.cancel_requested(run_id):
            raise Cancelled(run_id)

    def _build(self, planned: Plan, secrets: dict[str, str], notes: list[str]) -> str:
        """Make (or find) the run's image from the job's code; returns its name."""
        assert planned.build is not None and planned.version is not None
        if planned.build.builder.get("type") == "noop":  # W&B's NoOpBuilder: never builds
            raise RunnerError(
                "the agent does not build images (builder.type noop): this run's job needs"
                " a build; launch an image job or -d IMAGE, or serve it with a builder",
                stage="build",
            )
        move(self.store, planned.run["id"], State.BUILDING, agent_id=self.ctx.agent_id,
             expect=frozenset({State.CLAIMED}))  # fmt: skip
        for key in planned.build.ignored:  # said, never silently dropped
            self.store.runs.note(
                planned.run["id"],
                f"warning: builder.{key} in the run's launch spec is not used: only the"
                " queue's admin sets it (a queued run may set builder.base_image and"
                " builder.accelerator.base_image)",
            )
        notes.append(workspace.prepare(self.store, planned.run, planned.version, planned.workdir))
        from launchctl.images import ensure_image

        request = planned.build_request(secrets)
        # BuildKit's raw lines go to build.log beside the run's log; the run's log (and so
        # `logs -f`) and the agent's terminal get one line per build step (issue 12, item 9).
        build_log = planned.log_path.with_name(BUILD_LOG)
        run_id = planned.run["id"]

        def say(line: str) -> None:
            text = f"run {run_id}: {line.removeprefix('launchctl: ')}"
            if self.ctx.say is not None:
                self.ctx.say(text)
            else:  # on stderr, as the agent's command prints its own lines
                print(text, file=sys.stderr, flush=True)

        try:
            paths.make_file(build_log)
            with (
                open(planned.log_path, "ab", buffering=0) as log,
                open(build_log, "ab", buffering=0) as raw,
            ):
                for entry in planned.build.special:  # what job create did
                    log.write(
                        f"launchctl: job file {entry['path']}: {entry['what']}:"
                        f" {entry['action']} (at job create)\n".encode()
                    )
                told = False

                def to_build_log(chunk: bytes) -> None:
                    nonlocal told
                    if not told:  # said once a build starts (not for an image reused)
                        told = True
                        log.write(f"launchctl: BuildKit's own output: {build_log}\n".encode())
                    raw.write(chunk)

                built = ensure_image(
                    request, log.write, build_log=to_build_log, progress=self.ctx.progress or say
                )
        except LaunchctlError as exc:  # a BuildError, an engine that does not answer...
            detail = f" (build log: {build_log})" if str(exc).startswith("image build") else ""
            raise RunnerError(f"{exc}{detail}", stage="build") from None
        what = "built" if built.built else "reused"
        on = f" on base {', '.join(built.bases)}" if built.bases else ""  # issue 20
        notes.append(f"image {built.uri} {what} ({built.dockerfile_source}){on}")
        for warning in built.warnings:  # a base its registry could not confirm
            self.store.runs.note(run_id, f"warning: {warning}")
        return built.uri


# The folders that hold run folders (``runs/``) this process has made or found.
_MADE: set[str] = set()


def mark_attempt(store: Store, run: Row, log: Path) -> None:
    """The log of a run's second and later attempts says where each begins, and why
    the one before ended (its log keeps every attempt's output)."""
    tries = attempts(store.runs.events(run["id"]))
    if len(tries) < 2:
        return
    logfile.append_line(log, attempt_mark(tries))


def attempt_mark(tries: list[dict[str, Any]]) -> str:
    """The log line where attempt N (the last of ``tries``) begins:
    ``--- attempt 2 on agent Y (attempt 1 on agent X ended: requeued: ...) ---``."""
    now, before = tries[-1], tries[-2]
    why = before["message"] or before["outcome"] or "ended"
    return (
        f"--- attempt {now['attempt']} on agent {now['agent']} (attempt {before['attempt']}"
        f" on agent {before['agent']} ended: {why}) ---"
    )


def running_fields(handle: Handle, started_at: float) -> dict[str, Any]:
    """What the move to running records of a started run: its pid (or container), and
    when it started."""
    pid = handle.pid
    return {
        "message": f"pid {pid}" if pid else getattr(handle, "container_id", None),
        "pid": pid,
        "pid_started": handle.pid_started,
        "started_at": started_at,
    }


def _quick(planned: Plan, version: Row | None) -> bool:
    """Whether the next run of this job version starts in milliseconds here (``Started``)."""
    if not planned.process or planned.build is not None:
        return False
    if version is None:
        return True
    digest = version["source"].get("snapshot")
    return digest is not None and jobfiles.LAYOUTS.get(digest) is not None


def _check_host_paths(planned: Plan) -> None:
    """The host paths a launcher's value chose, with the host's symbolic links resolved."""
    try:
        check_host_paths(planned.host_paths)
    except LaunchctlError as exc:
        raise RunnerError(f"the run breaks its queue's rules: {exc}", stage="agent") from None


def _stop_unrecorded(handle: Handle, wait_s: float = 10.0) -> None:
    """Kill a run's process whose start the store could not record, and wait for its end."""
    handle.stop(0)
    deadline = time.monotonic() + wait_s
    while handle.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        handle.release()
