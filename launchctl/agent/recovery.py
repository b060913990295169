"""After an unclean stop: find this host's dead agents, end their leases, adopt their runs.

A dead agent is one whose process is gone (same host, so we can look). Its runs' leases
end at once; an agent serving their queue takes them over, follows what still runs,
and records truthfully what ended while nobody watched.
"""

from __future__ import annotations

import os

from launchctl import procfs
from launchctl.store import Row, Store


def agent_alive(pid: int) -> bool:
    """Whether ``pid`` is a live launchctl process (not a zombie, not a reused pid)."""
    return procfs.live(pid) and b"launchctl" in procfs.read(pid, "cmdline")


def dead_agents(store: Store, host: str, me: str) -> list[Row]:
    """Agents on ``host`` that never recorded a stop and whose process is gone."""
    rows = store.agents.unstopped_on(host, besides=me)
    return [row for row in rows if row["pid"] != os.getpid() and not agent_alive(row["pid"])]


def end_dead_leases(store: Store, host: str, me: str) -> list[Row]:
    """End the leases of every dead agent on this host; returns those agents."""
    dead = dead_agents(store, host, me)
    for agent in dead:
        store.runs.expire_leases_of(agent["id"], f"its process {agent['pid']} is gone")
    return dead
