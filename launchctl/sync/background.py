"""``agent --sync``: one sync pass every interval, in a thread beside the agent's loop.

The thread has its own store connection and runs at a lower CPU priority (Linux: niceness
+10 for this thread only, and for the ``wandb sync`` it starts); nothing it meets reaches
the agent: every exception of a pass is caught and said in one line. What it says comes
once per change of condition, never every interval:

- the server unreachable: ``sync: the server at URL is unreachable ...; next try in N s``,
  then silence while it stays so, each try waiting twice as long as the last (up to
  ``max_interval``), and ``sync: the server at URL answers again`` when it does;
- a refusal (a bad key, no key, a GraphQL error): its one line, once, and the same
  back-off (the key may be fixed while the agent runs: the credentials are resolved
  again each pass);
- ``sync: sent ...`` after a pass that sent something.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import LaunchctlError
from launchctl.sync.wire import Refused, Unreachable, one_line

DEFAULT_INTERVAL = 60.0
MAX_INTERVAL = 900.0  # the longest wait between two tries of an unreachable server
NICENESS = 10

PassFn = Callable[[], Any]


class BackgroundSync:
    """Run ``run_pass`` every ``interval`` seconds in a daemon thread until ``stop()``.

    ``run_pass`` (default: one pass of ``launchctl sync`` for the store at ``home`` and
    ``base_url``) returns what it sent: a sequence (its length is said) or a number; or
    None when nothing was owed, so the server was not asked (its condition is unknown).
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        say: Callable[[str], None] = lambda line: None,
        *,
        home: Path | None = None,
        base_url: str | None = None,
        run_pass: PassFn | None = None,
        max_interval: float = MAX_INTERVAL,
        first_delay: float = 0.0,
    ) -> None:
        if interval <= 0:
            raise LaunchctlError(f"the sync interval must be over 0 seconds (got {interval})")
        self.interval = float(interval)
        self.max_interval = max(float(max_interval), self.interval)
        self.first_delay = first_delay
        self.say = say
        self.home = home
        self.base_url = base_url
        self._run_pass = run_pass or self._default_pass
        self._event = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._condition: str | None = None  # the last trouble said, None when all is well
        self._failures = 0
        self._said: set[str] = set()
        self.passes = 0  # passes run (tests and status lines read it)

    # -- the agent's side -----------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="launchctl-sync", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass soon (a run just ended), unless the server is known to be away."""
        if self._condition is None:
            self._event.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the pass in flight, waiting up to ``timeout`` seconds for it (the
        thread is a daemon: a longer pass never holds the agent's exit)."""
        self._stopping = True
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread -----------------------------------------------------------

    def _loop(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        delay = self.first_delay
        while True:
            if delay > 0:
                self._event.wait(delay)
            if self._stopping:
                return
            self._event.clear()
            delay = self._one()
            if self._stopping:
                return

    def _one(self) -> float:
        """One pass; the seconds until the next."""
        self.passes += 1
        try:
            sent = self._run_pass()
        except Unreachable as exc:
            return self._trouble("unreachable", f"sync: {one_line(str(exc))}")
        except Refused as exc:
            return self._trouble(str(exc), f"sync: {one_line(str(exc))}")
        except LaunchctlError as exc:
            return self._trouble(str(exc), f"sync: {one_line(str(exc))}")
        except Exception as exc:  # a pass must never take the agent down
            text = f"{type(exc).__name__}: {exc}"
            return self._trouble(text, f"sync: a sync pass failed: {one_line(text)}")
        if sent is None:  # nothing was owed, so the server was not asked: nothing learnt
            return self.interval if self._condition is None else self._delay()
        if self._condition is not None:
            self.say("sync: the server answers again; the work that waited is being sent")
        self._condition = None
        self._failures = 0
        count = len(sent) if isinstance(sent, Sequence) else int(sent or 0)
        if count:
            self.say(f"sync: sent {count} item(s)")
        return self.interval

    def _delay(self) -> float:
        return min(self.interval * 2 ** min(self._failures, 16), self.max_interval)

    def _trouble(self, condition: str, line: str) -> float:
        self._failures += 1
        delay = self._delay()
        if condition != self._condition:
            self.say(f"{line}; the work waits; next try in {delay:.3g} s, then less often")
            self._condition = condition
        return delay

    def _default_pass(self) -> Any:
        return run_pass(self.home, self.base_url, self._say_once)

    def _say_once(self, line: str) -> None:
        """A step's line, said once while the agent runs (not every pass)."""
        if line not in self._said:
            self._said.add(line)
            self.say(f"sync: {line}")


def run_pass(
    home: Path | None, base_url: str | None, say: Callable[[str], None] | None = None
) -> Any:
    """One ``launchctl sync`` pass over every step, with its own store connection; the
    items sent. An unreachable server raises ``Unreachable`` (said once by the loop)."""
    from launchctl.store import Store
    from launchctl.sync import credentials, engine, wandb_offline, wire

    if say is not None:  # the wandb-offline step's own lines (what waits, and why)
        wandb_offline.say = say
    store = Store(home)
    try:
        creds = credentials.resolve(base_url, store=store, need_key=True)
        server = wire.WandbServer(creds)
        report = engine.sync(server, engine.Target(store=store, base_url=creds.base_url))
    finally:
        store.close()
    if report.offline:
        raise wire.Unreachable(report.offline)
    return report.sent if report.owed else None
