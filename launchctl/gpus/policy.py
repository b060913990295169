"""Which waiting run gets which GPUs: the allocation policy, pure functions of the pool.

The agent walks its queue's waiting runs in claim order (priority, then time queued) and
takes the first that fits on devices with room. A device has room for a run when nobody
outside launchctl is using it, it is not reserved for another run, and it holds fewer
runs than both the run's queue and every run on it allow (``gpu_sharing``, default 1).

Anti-starvation (backfill with reservations). A run that does not fit is passed over by
smaller runs behind it only while it has waited less than the backfill bound
(``--gpu-backfill-s``, 60 s). Once it has waited longer, the devices it needs are
reserved for it: free ones first, then the least loaded. A reserved device takes no new
run but that one, so the run starts as soon as the runs already on its devices end;
runs behind it may still use the devices it does not need. So no run waits longer than
the bound plus the time the runs on its reserved devices take to finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from launchctl.errors import ConfigError

DEFAULT_BUSY_MB = 1024
DEFAULT_BACKFILL_S = 60.0
MAX_SHARING = 64
NO_LIMIT = 1 << 30


@dataclass(frozen=True)
class Ask:
    """What a run asks for: a count, specific devices (``device=1,3``) or ``all``."""

    count: int = 0
    exact: tuple[int, ...] = ()
    every: bool = False

    @property
    def none(self) -> bool:
        """Whether the run asks for no GPU at all."""
        return self.count == 0 and not self.every

    def size(self, total: int) -> int:
        """How many devices it needs on an agent that has ``total``."""
        return total if self.every else self.count

    def __str__(self) -> str:
        if self.every:
            return "all GPUs"
        if self.exact:
            return "GPUs " + ",".join(str(i) for i in self.exact)
        return f"{self.count} GPU" + ("" if self.count == 1 else "s")


def parse_ask(value: Any) -> Ask:
    """``gpus`` as a run asks for it: a count, ``all``, ``device=1,3``; None asks for none."""
    if value is None:
        return Ask()
    text = str(value).strip().strip('"')
    if text == "all":
        return Ask(every=True)
    if text.startswith("device="):
        ids = [d.strip() for d in text.removeprefix("device=").split(",") if d.strip()]
        if not ids or not all(d.isdigit() for d in ids):
            raise ConfigError(f"gpus {value!r}: name devices by index, like device=0,1")
        exact = tuple(dict.fromkeys(int(d) for d in ids))
        return Ask(count=len(exact), exact=exact)
    if text.isdigit():
        return Ask(count=int(text))
    raise ConfigError(f"gpus must be all, a count or device=ID,...; got {value!r}")


def check_sharing(value: Any, *, where: str = "queue config") -> int:
    """``gpu_sharing: N``: how many runs of the queue may share one device (1 to 64)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARING:
        raise ConfigError(
            f"{where}: gpu_sharing must be a whole number of runs per GPU, 1 to {MAX_SHARING};"
            f" got {value!r}"
        )
    return value


def sharing_of(config: dict[str, Any] | None) -> int:
    """The queue's ``gpu_sharing`` (1 when unset or unreadable: never share by mistake)."""
    value = (config or {}).get("gpu_sharing", 1)
    try:
        return check_sharing(value)
    except ConfigError:
        return 1


@dataclass
class Slot:
    """One device of the agent, as the allocation table has it right now."""

    index: int
    runs: list[str] = field(default_factory=list)
    limit: int = NO_LIMIT  # the smallest gpu_sharing among the runs on it
    reserved_for: str | None = None
    external: bool = False  # used above the threshold by someone outside launchctl

    def has_room(self, sharing: int, run_id: str) -> bool:
        """Whether a run of a queue with ``gpu_sharing`` ``sharing`` may join this device."""
        if self.external or self.reserved_for not in (None, run_id):
            return False
        return len(self.runs) < min(sharing, self.limit)

    def reservable(self, run_id: str) -> bool:
        return not self.external and self.reserved_for in (None, run_id)


@dataclass(frozen=True)
class Candidate:
    """A waiting run, with what it asks for; ``ask`` None: unreadable, the agent fails it."""

    run_id: str
    ask: Ask | None
    sharing: int = 1
    waited_s: float = 0.0


@dataclass
class Plan:
    """The outcome of one pass: the run to claim and its devices, and new reservations."""

    run_id: str | None = None
    devices: list[int] = field(default_factory=list)
    sharing: int = 1
    reserve: dict[str, list[int]] = field(default_factory=dict)
    # Runs passed over because this agent's devices can never hold what they ask for.
    unservable: dict[str, Ask] = field(default_factory=dict)


def servable(ask: Ask, slots: list[Slot]) -> bool:
    """Whether this agent's devices could ever hold the ask (else another agent's may)."""
    if ask.exact:
        have = {s.index for s in slots}
        return all(i in have for i in ask.exact)
    return bool(slots) and ask.size(len(slots)) <= len(slots)


def _preference(run_id: str) -> Any:
    """Devices reserved for the run first, then the least loaded, then the lowest index."""
    return lambda s: (s.reserved_for != run_id, len(s.runs), s.index)


def _pick(ask: Ask, pool: list[Slot], slots: list[Slot], run_id: str) -> list[int] | None:
    """``ask``'s devices from ``pool`` (those that qualify), or None if too few qualify."""
    if ask.exact or ask.every:
        wanted = ask.exact or tuple(s.index for s in slots)
        have = {s.index for s in pool}
        return list(wanted) if all(i in have for i in wanted) else None
    if len(pool) < ask.count:
        return None
    return sorted(s.index for s in sorted(pool, key=_preference(run_id))[: ask.count])


def place(ask: Ask, slots: list[Slot], sharing: int, run_id: str) -> list[int] | None:
    """The devices the run gets now, or None when it does not fit."""
    return _pick(ask, [s for s in slots if s.has_room(sharing, run_id)], slots, run_id)


def to_reserve(ask: Ask, slots: list[Slot], run_id: str) -> list[int] | None:
    """The devices to hold for a run that has waited too long, or None if others hold them."""
    return _pick(ask, [s for s in slots if s.reservable(run_id)], slots, run_id)


def plan(candidates: Iterable[Candidate], slots: list[Slot], backfill_s: float) -> Plan:
    """Walk the waiting runs in claim order; claim the first that fits (see module doc)."""
    out = Plan()
    by_index = {s.index: s for s in slots}
    for cand in candidates:
        if cand.ask is None or cand.ask.none:
            return Plan(cand.run_id, [], cand.sharing, out.reserve, out.unservable)
        if not servable(cand.ask, slots):
            out.unservable[cand.run_id] = cand.ask
            continue
        got = place(cand.ask, slots, cand.sharing, cand.run_id)
        if got is not None:
            return Plan(cand.run_id, got, cand.sharing, out.reserve, out.unservable)
        if cand.waited_s < backfill_s:
            continue
        held = sorted(s.index for s in slots if s.reserved_for == cand.run_id)
        want = to_reserve(cand.ask, slots, cand.run_id)
        if want is None:
            continue  # an older reservation holds its devices; it goes first
        for index in want:
            by_index[index].reserved_for = cand.run_id
        if want != held:
            out.reserve[cand.run_id] = want
    return out


def would_fit(ask: Ask, slots: list[Slot], sharing: int = 1) -> bool:
    """Whether a waiting run could start now; for checks over a recorded history."""
    return servable(ask, slots) and place(ask, slots, sharing, "") is not None


def slots_for(
    indices: Iterable[int],
    allocations: Iterable[dict[str, Any]],
    reservations: Iterable[dict[str, Any]],
    used_mb: dict[int, int] | None = None,
    busy_mb: int = DEFAULT_BUSY_MB,
) -> list[Slot]:
    """The agent's devices with their runs, reservations and outside use.

    A device counts as used from outside launchctl when it holds none of launchctl's
    runs and more than ``busy_mb`` MiB of its memory is in use.
    """
    slots = {i: Slot(i) for i in indices}
    for row in allocations:
        slot = slots.get(row["idx"])
        if slot is not None:
            slot.runs.append(row["run_id"])
            slot.limit = min(slot.limit, int(row["sharing"]))
    for row in reservations:
        slot = slots.get(row["idx"])
        if slot is not None:
            slot.reserved_for = row["run_id"]
    for index, used in (used_mb or {}).items():
        slot = slots.get(index)
        if slot is not None and not slot.runs and used > busy_mb:
            slot.external = True
    return list(slots.values())


def walk(
    rows: Iterable[dict[str, Any]],
    ask_of: Callable[[dict[str, Any]], Ask],
    sharing: int,
    now: float,
) -> Iterator[Candidate]:
    """Candidates from waiting run rows, reading each one's ask only when reached."""
    for row in rows:
        try:
            ask: Ask | None = ask_of(row)
        except Exception:  # a row the agent cannot read: claimed, and failed with the reason
            ask = None
        yield Candidate(
            run_id=row["id"],
            ask=ask,
            sharing=sharing,
            waited_s=max(0.0, now - float(row["waiting_since"])),
        )
