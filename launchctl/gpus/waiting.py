"""Runs an agent passes over because it cannot give them the GPUs they ask for.

A run that asks for GPUs never runs without them. An agent that does not schedule GPUs
(``--gpus none``, or no GPU found) claims only the runs that ask for none; an agent
whose devices are too few for a run (or lack the ones it names) leaves that run too.
The run stays queued, so an agent that has the GPUs can still claim it, and its
``runs show`` says why it waits. An agent started with ``--burst`` (it leaves when its
work is done) fails such a run at stage ``agent`` instead, unless another live agent
that serves the queue may hold GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from launchctl.gpus.policy import Ask, parse_ask
from launchctl.store.db import Row, loads
from launchctl.store.runs import WAIT_PREFIX

if TYPE_CHECKING:
    from launchctl.store import Store

WAITING = WAIT_PREFIX  # "waiting: ", the start of the reason a passed-over run waits with


@dataclass
class Passed:
    """The runs one claim passed over, by id, with the reason each waits."""

    reasons: dict[str, str] = field(default_factory=dict)


def lacking(ask: Ask, agent_id: str, indices: list[int] | None) -> str:
    """Why agent ``agent_id`` (with the devices ``indices``; None: no GPU scheduling) cannot
    run a run that asks for ``ask``: "needs 2 GPUs, agent X has none"."""
    if not indices:
        why = " (it does not schedule GPUs)" if indices is None else ""
        return f"needs {ask}, agent {agent_id} has none{why}"
    have = ",".join(str(i) for i in indices)
    count = f"{len(indices)} GPU{'' if len(indices) == 1 else 's'}"
    return f"needs {ask}, agent {agent_id} has {count} ({have})"


def may_ask(queue: Row, row: Row) -> bool:
    """Whether the run could ask for GPUs at all: neither its spec nor its queue's config
    mentions them (the common case: no resolve needed)."""
    spec = row["spec"] if isinstance(row["spec"], str) else repr(row["spec"])
    config = queue.get("config")
    text = config if isinstance(config, str) else repr(config)
    return "gpus" in spec or "gpus" in text


def ask_of(queue: Row) -> Callable[[Row], Ask]:
    """What a waiting run of ``queue`` asks for, as the agent will resolve it."""
    from launchctl.resolve import resolve

    def ask(row: Row) -> Ask:
        spec = loads(row["spec"]) if isinstance(row["spec"], str) else row["spec"]
        return parse_ask(resolve(queue, spec or {}, row["resource"]).limits.gpus)

    return ask


def without_gpus(agent_id: str, passed: Passed) -> Callable[[Row, list[Row]], str | None]:
    """The choice of an agent that schedules no GPUs: the first waiting run that asks for
    none. A run whose ask cannot be read is taken: its start fails it, saying why."""

    def choose(queue: Row, rows: list[Row]) -> str | None:
        asker = ask_of(queue)
        for row in rows:
            if not may_ask(queue, row):
                return str(row["id"])
            try:
                ask = asker(row)
            except Exception:
                return str(row["id"])
            if ask.none:
                return str(row["id"])
            passed.reasons[str(row["id"])] = lacking(ask, agent_id, None)
        return None

    return choose


def live_gpu_agents(store: Store, queue_name: str, besides: str) -> list[Row]:
    """Other live agents serving ``queue_name`` on a machine whose GPUs an agent reported:
    they may hold the GPUs a run asks for, so a burst agent leaves it to them."""
    from launchctl.runs import SERVING_WITHIN_S

    hosts = {row["host"] for row in store.gpus.inventory()}
    return [
        a
        for a in store.agents.live(within_s=SERVING_WITHIN_S)
        if a["id"] != besides and queue_name in a["queues"] and a["host"] in hosts
    ]
