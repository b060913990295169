"""Hooks when a run ends, or stalls: a command, a webhook or a desktop notification (issue 18).

A queue's config (``hooks:``, written by its admins) and an agent's config file (``hooks:``,
its owner's) list them::

    hooks:
      - on: [failed]                       # terminal states; default: every end
        command: "notify-me.sh"            # the run's facts are in its environment
        timeout: 60                        # seconds, then its process group is killed
      - webhook: {"secret": "SLACK_HOOK"}  # or a plain http(s) URL
        retries: 5                         # with backoff from 1 s, doubling
      - notify: true                       # notify-send / osascript, where there is one
      - on: [stalled]                      # a running run silent for its queue's stall_after
        webhook: https://example.org/stuck #   (launchctl.stall); never in the default

How they run:

- A trigger records every move into a terminal state in the move's own transaction
  (``hook_ends``, migration m011). Each agent runs a ``Dispatcher`` thread beside its
  loop: it turns the ends of the runs it held (and of runs of its queues no live agent
  holds: a queued run cancelled from the CLI, an agent that died) into deliveries in
  the durable outbox (``hook_deliveries``), then makes them, off the run's critical path.
  A killed agent's owed deliveries are taken over by the next agent (same user for an
  agent config's hooks; serving the queue for a queue's), so a restart delivers them.
- Nothing a hook does changes its run's state: a failure is a line on the agent's
  stderr, a note on the run, and ``failed`` in ``runs show``'s hook list.
- A queue's command hook runs as a run of that queue would: only on local-process
  queues (a container queue's admin must not get a shell on the host), as the queue's
  ``run_as`` user when it has one, with the agent's environment minus launchctl's own
  settings (no ``LAUNCHCTL_HOME``), in a private temporary folder, its ``LAUNCHCTL_LOG``
  a copy of the run's log there (no path into the store). An agent config's command hook
  is its owner's: the agent's user, its environment, the real log path.
- The run's facts (name, reason...) reach a command only through its environment, never
  its command line. A webhook URL from a secret is shown as ``***`` everywhere.
- ``stalled`` (issue 18) is an event, not an end: the agent's stall watch
  (``launchctl.agent.stall``) owes a stalled run's deliveries (``owed_for_stall``) in the
  transaction that marks it, and the dispatcher makes them as it makes the others. Its
  facts say ``"event": "run.stalled"``, the state ``running`` and ``stalled_since``; a
  command gets ``LAUNCHCTL_HOOK_EVENT`` (``run.ended`` or ``run.stalled``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from launchctl.errors import ConfigError, LaunchctlError
from launchctl.states import TERMINAL, ordered

if TYPE_CHECKING:
    from launchctl.store import Store
    from launchctl.store.hooks import HookTable

ENDS = [s.value for s in ordered(TERMINAL)]  # finished, failed, stopped
STALLED = "stalled"  # issue 18: not an end; a hook names it in ``on:`` to get it
EVENTS = [*ENDS, STALLED]
KINDS = ("command", "webhook", "notify")
KEYS = ("on", "command", "webhook", "notify", "timeout", "retries")
MAX_HOOKS = 20
MAX_COMMAND = 4096
MAX_URL = 2048
DEFAULT_TIMEOUT = {"command": 60.0, "webhook": 10.0, "notify": 10.0}
DEFAULT_RETRIES = 5
MAX_RETRIES = 20
BACKOFF_ENV = "LAUNCHCTL_HOOK_BACKOFF_S"  # the first wait between webhook tries (default 1 s)
POLL_ENV = "LAUNCHCTL_HOOK_POLL_S"  # the dispatcher's fallback poll (default 2 s)
LOG_COPY_BYTES = 1 << 20  # a queue hook's LAUNCHCTL_LOG: the last MiB of the run's log
OUTPUT_LINES = 5  # lines of a command's output said on failure
MASK = "***"


# -- checking a config ----------------------------------------------------------------------


def check_hooks(
    value: Any, *, where: str, resource: str | None = None, queue: bool = True
) -> list[dict[str, Any]]:
    """``hooks`` as written, checked; returns each hook with its defaults. ``resource``:
    the queue's resource type (a command hook needs local-process); ``queue``: a queue's
    hooks (else an agent config's). One ``ConfigError`` line naming the key otherwise."""
    from launchctl.secrets import is_secret_ref

    if not isinstance(value, list):
        raise ConfigError(
            f"{where}: hooks must be a list of hooks like [{{on: [failed], notify: true}}]"
        )
    if len(value) > MAX_HOOKS:
        raise ConfigError(f"{where}: hooks holds {len(value)} hooks; at most {MAX_HOOKS}")
    out = []
    for i, hook in enumerate(value):
        at = f"{where}: hooks[{i}]"
        if not isinstance(hook, dict):
            raise ConfigError(f"{at} must be an object with one of: command, webhook, notify")
        unknown = [k for k in hook if k not in KEYS]
        if unknown:
            raise ConfigError(
                f"{at} has unknown key {str(unknown[0])!r} (allowed: {', '.join(KEYS)})"
            )
        kinds = [k for k in KINDS if k in hook]
        if len(kinds) != 1:
            raise ConfigError(f"{at} must have exactly one of: command, webhook, notify")
        kind = kinds[0]
        on = hook.get("on", list(ENDS))
        if isinstance(on, str):
            on = [on]
        if not isinstance(on, list) or not on or not all(isinstance(s, str) for s in on):
            raise ConfigError(
                f"{at}.on must be a list of end states: {', '.join(ENDS)} (or {STALLED})"
            )
        for state in on:
            if state not in EVENTS:
                why = (
                    " (a preempted run goes back to its queue: it has not ended)"
                    if state == "preempted"
                    else ""
                )
                raise ConfigError(
                    f"{at}.on: {state[:40]!r} is not an end state{why}; use: {', '.join(EVENTS)}"
                )
        checked: dict[str, Any] = {"on": list(dict.fromkeys(on)), kind: hook[kind]}
        timeout = hook.get("timeout", DEFAULT_TIMEOUT[kind])
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 86400
        ):
            raise ConfigError(f"{at}.timeout must be a number of seconds (over 0, at most 86400)")
        checked["timeout"] = float(timeout)
        if "retries" in hook and kind != "webhook":
            raise ConfigError(f"{at}.retries applies to webhooks only (a {kind} runs once)")
        if kind == "command":
            command = hook["command"]
            if not isinstance(command, str) or not command.strip():
                raise ConfigError(f"{at}.command must be a shell command (text)")
            if len(command) > MAX_COMMAND or "\0" in command:
                raise ConfigError(f"{at}.command must be at most {MAX_COMMAND} characters, no NUL")
            if queue and resource is not None and resource != "local-process":
                raise ConfigError(
                    f"{at}.command: a command hook runs on the agent's host, as a run of the queue"
                    f" would; a {resource} queue's runs do not run there: use a webhook or notify"
                )
        elif kind == "webhook":
            url = hook["webhook"]
            if isinstance(url, dict):
                if not is_secret_ref(url):
                    raise ConfigError(
                        f'{at}.webhook: a secret reference is {{"secret": "NAME"}} and nothing'
                        " else, NAME being 1-64 letters, digits, '.', '_' or '-'"
                    )
            else:
                problem = url_problem(url)
                if problem:
                    raise ConfigError(f"{at}.webhook: {problem}")
            retries = hook.get("retries", DEFAULT_RETRIES)
            if (
                isinstance(retries, bool)
                or not isinstance(retries, int)
                or not 0 <= retries <= MAX_RETRIES
            ):
                raise ConfigError(f"{at}.retries must be a whole number from 0 to {MAX_RETRIES}")
            checked["retries"] = retries
        elif hook["notify"] is not True:
            raise ConfigError(f"{at}.notify must be true (leave the hook out to have none)")
        out.append(checked)
    return out


def url_problem(url: Any) -> str | None:
    """Why ``url`` is not a webhook URL (http or https, with a host), or None. Never
    quotes the URL: it may hold a token."""
    if not isinstance(url, str) or not url:
        return 'must be an http(s) URL or {"secret": "NAME"}'
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return f"must be an http(s) URL of at most {MAX_URL} characters, without spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    if not parts.hostname:
        return "the URL has no host"
    del port
    return None


def shown_url(hook: Mapping[str, Any]) -> str:
    """A webhook as it may be shown: ``***`` for a secret's URL, else scheme://host/path
    (a query may hold a token)."""
    url = hook.get("webhook")
    if not isinstance(url, str):
        return MASK
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# -- the facts a hook is given ---------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def facts(run: Mapping[str, Any], queue: Mapping[str, Any] | None, log: str) -> dict[str, Any]:
    """What every hook of ``run`` is given (the webhook's body, the command's environment)."""
    started, ended = run.get("started_at"), run.get("ended_at")
    duration = round(ended - started, 3) if started is not None and ended is not None else None
    config = (queue or {}).get("config") or {}
    return {
        "event": "run.ended",
        "run_id": run["id"],
        "name": run["name"],
        "state": run["state"],
        "exit_code": run.get("exit_code"),
        "stage": run.get("stage"),
        "reason": run.get("reason"),
        "queue": run.get("queue_name"),
        "entity": run["entity"],
        "project": run["project"],
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": duration,
        "log": log,
        "run_as": config.get("run_as") if isinstance(config, dict) else None,
    }


def stall_facts(
    run: Mapping[str, Any], queue: Mapping[str, Any] | None, log: str, since: float, silent_s: float
) -> dict[str, Any]:
    """What a ``stalled`` hook is given: a running run's facts, since when it is silent."""
    f = facts(run, queue, log)
    f.update(event="run.stalled", state="running", stalled_since=_iso(since),
             silent_s=round(silent_s, 3))  # fmt: skip
    return f


def owed_for_stall(
    f: Mapping[str, Any],
    queue: Mapping[str, Any] | None,
    agent_hooks: Iterable[Mapping[str, Any]],
    owner: str,
) -> list[dict[str, Any]]:
    """The deliveries a stalled run is owed (``facts`` from ``stall_facts``): its queue's and
    its agent's hooks that name ``stalled`` in ``on:``, owed by the agent ``owner``."""
    sources = [("queue", queue_hooks(queue)), ("agent", list(agent_hooks))]
    return owed_by(
        f, sources, lambda hook: STALLED in (hook.get("on") or ()),
        queue_id=(queue or {}).get("id"), owner=owner,
    )  # fmt: skip


def queue_hooks(queue: Mapping[str, Any] | None) -> list[Any]:
    """The hooks a queue's config names (none for a queue that is gone)."""
    config = (queue or {}).get("config") or {}
    return list(config.get("hooks") or []) if isinstance(config, dict) else []


def owed_by(
    f: Mapping[str, Any],
    sources: Iterable[tuple[str, Iterable[Any]]],
    wants: Callable[[Mapping[str, Any]], bool],
    *,
    queue_id: Any,
    owner: str,
) -> list[dict[str, Any]]:
    """The deliveries owed for one event with ``facts`` ``f``: each hook of ``sources``
    (``(source, hooks)``: ``queue``, ``agent``) that ``wants`` picks and that names a kind,
    owed by the agent ``owner``; a webhook gets its retries."""
    owed: list[dict[str, Any]] = []
    for source, hooks in sources:
        for hook in hooks:
            if not isinstance(hook, dict) or not wants(hook):
                continue
            kind = next((k for k in KINDS if k in hook), None)
            if kind is None:
                continue
            tries = 1 + int(hook.get("retries", DEFAULT_RETRIES)) if kind == "webhook" else 1
            owed.append({
                "source": source, "queue_id": queue_id, "owner": owner,
                "owner_uid": os.getuid(), "kind": kind, "hook": dict(hook), "facts": dict(f),
                "max_attempts": tries,
            })  # fmt: skip
    return owed


def body(f: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook's JSON body: the facts, without where things are on this machine."""
    return {k: v for k, v in f.items() if k not in ("log", "run_as")}


def command_env(f: Mapping[str, Any], log: str) -> dict[str, str]:
    def text(v: Any) -> str:
        return "" if v is None else str(v)

    return {
        "LAUNCHCTL_HOOK_EVENT": text(f.get("event") or "run.ended"),
        "LAUNCHCTL_STALLED_SINCE": text(f.get("stalled_since")),
        "LAUNCHCTL_RUN_ID": f["run_id"],
        "LAUNCHCTL_RUN_NAME": text(f["name"]),
        "LAUNCHCTL_RUN_STATE": f["state"],
        "LAUNCHCTL_EXIT_CODE": text(f["exit_code"]),
        "LAUNCHCTL_STAGE": text(f["stage"]),
        "LAUNCHCTL_REASON": text(f["reason"]),
        "LAUNCHCTL_QUEUE": text(f["queue"]),
        "LAUNCHCTL_ENTITY": text(f["entity"]),
        "LAUNCHCTL_PROJECT": text(f["project"]),
        "LAUNCHCTL_STARTED_AT": text(f["started_at"]),
        "LAUNCHCTL_ENDED_AT": text(f["ended_at"]),
        "LAUNCHCTL_DURATION": text(f["duration_s"]),
        "LAUNCHCTL_LOG": log,
    }


# -- making one delivery ----------------------------------------------------------------------


class Outcome:
    """How one attempt went: ``ok``; else ``error`` (one line) and whether to try again."""

    def __init__(self, ok: bool, error: str | None = None, *, skipped: bool = False) -> None:
        self.ok, self.error, self.skipped = ok, error, skipped


def run_command(
    hook: Mapping[str, Any],
    f: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str],
    cancel: threading.Event | None = None,
) -> tuple[Outcome, list[str]]:
    """Run a command hook: ``/bin/sh -c COMMAND`` in a session of its own, in a private
    temporary folder, the facts in its environment; its group killed after the timeout.
    Returns the outcome and the last lines of its output."""
    from launchctl import runas

    user = None
    if source == "queue" and f.get("run_as"):
        user = runas.for_run(f["run_as"], f.get("queue") or "?")  # refused: the run was too
    folder = Path(tempfile.mkdtemp(prefix="launchctl-hook-"))
    try:
        log = str(f["log"])
        if source == "queue":  # no path into the store: a copy of the log's tail
            copy = folder / "output.log"
            _copy_tail(Path(log), copy)
            log = str(copy)
            if user is not None:
                keep = runas.INHERITED
                env = {
                    k: v
                    for k, v in environ.items()
                    if k in keep or k.startswith(runas.INHERITED_PREFIXES)
                }
                env.update(runas.environment(user))
            else:
                env = {k: v for k, v in environ.items() if not k.startswith("LAUNCHCTL_")}
        else:
            env = dict(environ)
        env.update(command_env(f, log))
        out_path = folder / "hook-output.txt"
        if user is not None:
            for p in (folder, *folder.iterdir()):
                os.chown(p, user.uid, user.gid)
        with open(out_path, "wb") as out:
            if user is not None:
                os.chown(out_path, user.uid, user.gid)
            extra: dict[str, Any] = {}
            if user is not None:
                extra = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", str(hook["command"])], cwd=folder, env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, **extra,
                )  # fmt: skip
            except OSError as exc:
                return Outcome(False, f"could not start: {exc.strerror or exc}"), []
            timeout = float(hook.get("timeout", DEFAULT_TIMEOUT["command"]))
            deadline = time.monotonic() + timeout
            code: int | None = None
            while code is None:
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    break
                try:
                    code = proc.wait(timeout=min(left, 0.2))
                except subprocess.TimeoutExpired:
                    continue
            if code is not None:
                outcome = Outcome(True) if code == 0 else Outcome(False, f"exited {code}")
            else:
                _kill_group(proc)
                why = f"timed out after {timeout:g} s"
                if cancel is not None and cancel.is_set() and time.monotonic() < deadline:
                    why = "the agent stopped before it ended"
                outcome = Outcome(False, f"{why}; its process group was killed")
        lines = _tail_lines(out_path)
        return outcome, lines
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGKILL:
                return
        except subprocess.TimeoutExpired:
            continue
    # The leader is gone; whatever it left in its group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _copy_tail(src: Path, dst: Path) -> None:
    from launchctl.runners.logfile import read_log

    data = b""
    with contextlib.suppress(OSError), read_log(src) as fh:  # never a FIFO put in its place
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - LOG_COPY_BYTES))
        data = fh.read()
    dst.write_bytes(data)


def _tail_lines(path: Path) -> list[str]:
    from launchctl.runners.logfile import read_log

    try:
        with read_log(path) as fh:  # never a FIFO the run put in its place
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line[:300] for line in text.splitlines() if line.strip()][-OUTPUT_LINES:]


def post_webhook(url: str, payload: Mapping[str, Any], *, timeout: float, delivery: int) -> Outcome:
    """POST ``payload`` as JSON to ``url``; a 2xx answer is a delivery. No redirect is
    followed. The error never holds the URL."""
    import http.client

    from launchctl import __version__

    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    data = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"launchctl/{__version__}",
        "X-Launchctl-Delivery": str(delivery),  # the same on every try: receivers may dedupe
    }
    if parts.username or parts.password:
        import base64

        creds = f"{parts.username or ''}:{parts.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(creds).decode()
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            resp.read(65536)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        return Outcome(False, f"could not reach it ({why})")
    if 200 <= resp.status < 300:
        return Outcome(True)
    return Outcome(False, f"answered HTTP {resp.status}")


def notifier() -> list[str] | None:
    """The command that shows a desktop notification here, or None."""
    if sys.platform == "darwin" and shutil.which("osascript"):
        return ["osascript"]
    has_session = any(
        os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
    )
    if shutil.which("notify-send") and has_session:
        return ["notify-send"]
    return None


def notify(f: Mapping[str, Any], timeout: float) -> Outcome:
    tool = notifier()
    if tool is None:
        return Outcome(
            False,
            "no desktop notification here (notify-send with a display or D-Bus session, or"
            " osascript on macOS)",
            skipped=True,
        )
    title = f"launchctl: run {f['name']} {f['state']}"
    if f.get("event") == "run.stalled":
        title = f"launchctl: run {f['name']} stalled (no output since {f.get('stalled_since')})"
    text = f"{f['run_id']} on {f.get('queue') or '(direct launch)'}"
    if f.get("exit_code") is not None:
        text += f", exit code {f['exit_code']}"
    if tool[0] == "osascript":  # the text as arguments, never inside the script
        argv = ["osascript", "-e", "on run argv", "-e",
                "display notification (item 2 of argv) with title (item 1 of argv)",
                "-e", "end run", title, text]  # fmt: skip
    else:
        argv = ["notify-send", "--app-name=launchctl", "--", title, text]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=timeout, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(False, f"{tool[0]} failed: {type(exc).__name__}")
    if proc.returncode != 0:
        first = proc.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        return Outcome(
            False, f"{tool[0]} exited {proc.returncode}" + (f": {first[0][:200]}" if first else "")
        )
    return Outcome(True)


# -- what the CLI shows ------------------------------------------------------------------------


def describe(row: Mapping[str, Any]) -> str:
    """A delivery's hook in one phrase, its URL masked."""
    hook = row["hook"]
    if row["kind"] == "command":
        text = str(hook.get("command", ""))
        return f"command {text if len(text) <= 60 else text[:57] + '...'}"
    if row["kind"] == "webhook":
        return f"webhook {shown_url(hook)}"
    return "notify"


def deliveries(store: Store, run_id: str) -> dict[str, Any]:
    """The hook deliveries of a run (``runs show``): each with its source, what it is, its
    state and attempts; ``waiting``: its end is recorded, its hooks not worked out yet."""
    table = _table(store)
    rows = table.for_run(run_id)
    listed = [
        {
            "id": r["id"],
            "source": r["source"],
            "event": _event(r),  # run.ended, or run.stalled
            "kind": r["kind"],
            "hook": describe(r) + (" (stalled)" if _event(r) == "run.stalled" else ""),
            "state": r["state"],
            "attempts": r["attempts"],
            "max_attempts": r["max_attempts"],
            "last_error": r["last_error"],
            "done_at": r["done_at"],
        }
        for r in rows
    ]
    return {"waiting": table.waiting_end(run_id), "deliveries": listed}


def _event(row: Mapping[str, Any]) -> str:
    return str((row.get("facts") or {}).get("event") or "run.ended")


def _table(store: Store) -> HookTable:
    from launchctl.store.hooks import HookTable

    return HookTable(store.db)


# -- the dispatcher ------------------------------------------------------------------------------


class Dispatcher:
    """Works out and makes the hooks of ended runs, in a daemon thread beside an agent.

    ``agent_id``: the agent it serves; ``queue_names``: its queues; ``hooks``: the agent
    config's hooks (checked). It has its own store connection. Nothing it meets reaches the
    agent: each failure is one line through ``say``.
    """

    def __init__(
        self,
        agent_id: str,
        queue_names: Iterable[str],
        hooks: list[dict[str, Any]] | None = None,
        say: Callable[[str], None] = lambda line: None,
        *,
        home: Path | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.queue_names = list(queue_names)
        self.hooks = list(hooks or [])
        self.say = say
        self.home = home
        self.poll = _env_seconds(POLL_ENV, 2.0)
        self.backoff = _env_seconds(BACKOFF_ENV, 1.0)
        self._event = threading.Event()
        self._cancel = threading.Event()  # kills a command in flight (a stop that waited)
        self._stopping = False
        self._drain = False
        self._thread: threading.Thread | None = None
        self._said_no_notify = False
        self._store: Store | None = None
        self._waker: Any = None

    def start(self) -> None:
        """Say in the store whether this agent has hooks (before it claims anything), and
        start the thread, with a store connection of its own."""
        if self._thread is not None:
            return
        from launchctl.agent.wake import Waker
        from launchctl.paths import db_path
        from launchctl.store import Store

        self._store = Store(self.home)
        _table(self._store).mark_agent(self.agent_id, bool(self.hooks))
        # Woken by every write to the store (a run's end among them), as the agent is;
        # each pass is one read when there is nothing to do.
        self._waker = Waker(db_path(self._store.root), fallback_s=self.poll)
        self._event = self._waker.event
        self._waker.start()
        self._thread = threading.Thread(target=self._loop, name="launchctl-hooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._event.set()

    def stop(self, *, drain: bool = False, timeout: float = 10.0) -> None:
        """Stop after the pass under way and one more, for what just ended: what is due
        now is made now (with ``drain``, as ``agent --burst`` ends, commands included,
        each within its own timeout; else a command not yet started is left to the next
        agent, and one still running ``timeout`` seconds later is killed, its group, and
        recorded as failed, saying so). A retry not yet due is left to the next agent."""
        self._stopping = True
        self._drain = drain
        self._event.set()
        if self._thread is not None:
            self._thread.join(None if drain else timeout)
            if self._thread.is_alive():
                self._cancel.set()
                self._thread.join(10.0)

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        assert self._store is not None
        try:
            while True:
                stopping = self._stopping
                wait = self._safe_pass()
                if stopping:
                    return
                self._event.wait(wait)
                self._event.clear()
        finally:
            if self._waker is not None:
                self._waker.close()
            self._store.close()

    def _safe_pass(self) -> float:
        try:
            return self.run_pass()
        except Exception as exc:
            self.say(f"hooks: a pass failed: {exc}")
            return self.poll

    def run_pass(self) -> float:
        """One pass: work out new ends, take over a gone agent's deliveries, make what is
        due. Returns how long to wait before the next."""
        store = self._store
        assert store is not None
        table = _table(store)
        if not table.busy(self.agent_id):  # the usual case: one read, nothing to do
            return self.poll
        queue_ids = self._queue_ids(store)
        dead = self._dead(store)
        for end in table.ends_for(self.agent_id, queue_ids, dead):
            self._expand(store, table, end)
        if table.take_over(self.agent_id, os.getuid(), queue_ids, dead):
            self.say("hooks: took over the deliveries owed by an agent that is gone")
        tried: set[int] = set()  # each delivery at most once a pass, whatever happens
        while True:
            due = [r for r in table.due(self.agent_id, time.time()) if r["id"] not in tried]
            if not due:
                break
            for row in due:
                tried.add(int(row["id"]))
                self._deliver(store, table, row)
            if self._stopping:
                break
        nxt = table.next_at(self.agent_id)
        if self._stopping and nxt is not None:
            self.say("hooks: deliveries still owed are left to the next agent of these queues")
        wait = self.poll if nxt is None else min(self.poll, max(0.0, nxt - time.time()))
        return max(wait, 0.01)

    def _queue_ids(self, store: Store) -> list[int]:
        found = (store.queues.find(name) for name in self.queue_names)
        return [int(q["id"]) for q in found if q is not None]

    def _dead(self, store: Store) -> list[str]:
        import socket

        from launchctl.agent.recovery import dead_agents

        return [a["id"] for a in dead_agents(store, socket.gethostname(), self.agent_id)]

    def _expand(self, store: Store, table: HookTable, end: Mapping[str, Any]) -> None:
        from launchctl import paths

        run = store.runs.find(end["run_id"])
        queue = None
        if end.get("queue_id") is not None:
            queue = store.queues.by_id(int(end["queue_id"]))
        if run is None:
            table.expand(end["run_id"], [])
            return
        log = run.get("log_path") or str(paths.run_dir(run["id"], store.root) / "output.log")
        sources: list[tuple[str, list[Any]]] = [
            ("queue", queue_hooks(queue)),
            # An agent config's hooks: for runs an agent held when they ended (this one,
            # or one that died: its restart takes its place); not for a queued run cancelled.
            ("agent", self.hooks if end.get("agent_id") is not None else []),
        ]
        owed = owed_by(
            facts(run, queue, log), sources, lambda hook: run["state"] in hook.get("on", ENDS),
            queue_id=end.get("queue_id"), owner=self.agent_id,
        )  # fmt: skip
        table.expand(end["run_id"], owed)

    def _deliver(self, store: Store, table: HookTable, row: Mapping[str, Any]) -> None:
        if self._stopping and not self._drain and row["kind"] == "command":
            return  # not started while the agent stops: the next agent runs it
        if not table.attempt(row["id"], self.agent_id):
            return
        attempt = int(row["attempts"]) + 1
        hook, f, kind = row["hook"], row["facts"], row["kind"]
        what = describe(row)
        run_id = f["run_id"]
        lines: list[str] = []
        secret_url: str | None = None
        try:
            if kind == "command":
                outcome, lines = run_command(
                    hook, f, source=row["source"], environ=os.environ, cancel=self._cancel
                )
            elif kind == "webhook":
                url = hook["webhook"]
                if isinstance(url, dict):
                    from launchctl.secrets import SecretStore

                    secret_url = url = SecretStore().get(url["secret"])
                    problem = url_problem(url)
                    if problem:
                        raise LaunchctlError(
                            f"the URL in secret {hook['webhook']['secret']} {problem}"
                        )
                outcome = post_webhook(
                    url, body(f), timeout=float(hook.get("timeout", 10.0)), delivery=int(row["id"])
                )
            else:
                outcome = notify(f, float(hook.get("timeout", 10.0)))
        except LaunchctlError as exc:
            outcome = Outcome(False, str(exc))
        except OSError as exc:
            outcome = Outcome(False, f"{type(exc).__name__}: {exc.strerror or exc}")
        except Exception as exc:  # anything else ends this delivery, never the dispatcher
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        error = outcome.error
        if error and secret_url:
            error = error.replace(secret_url, MASK)
        if error and isinstance(hook.get("webhook"), str):
            error = error.replace(hook["webhook"], shown_url(hook))
        if outcome.ok:
            table.settle(row["id"], "delivered", retry_at=None)
            self.say(f"hooks: run {run_id}: {row['source']} hook {what}: delivered")
            return
        if outcome.skipped:
            table.settle(row["id"], "skipped", error=error, retry_at=None)
            if not self._said_no_notify:
                self._said_no_notify = True
                self.say(f"hooks: {error}; notify hooks are skipped")
            return
        if attempt < int(row["max_attempts"]):
            delay = self.backoff * (2 ** (attempt - 1))
            table.settle(row["id"], "pending", error=error, retry_at=time.time() + delay)
            self.say(
                f"hooks: run {run_id}: {row['source']} hook {what}: {error}; try {attempt + 1}"
                f" of {row['max_attempts']} in {delay:g} s"
            )
            return
        table.settle(row["id"], "failed", error=error, retry_at=None)
        self.say(f"hooks: run {run_id}: {row['source']} hook {what} failed: {error}")
        for line in lines:
            self.say(f"hooks: run {run_id}:   | {line}")
        tries = f" after {attempt} tries" if attempt > 1 else ""
        with contextlib.suppress(LaunchctlError):
            store.runs.note(run_id, f"hook {what} failed{tries}: {error}")


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if 0 < seconds <= 3600 else default
