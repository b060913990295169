"""A sweep trial's result: the value of the sweep's metric that the trial's run reported.

A run reports its metric in one of two ways, both read only from the run's own folder:

- through W&B's client, offline: ``wandb.init()`` + ``wandb.log({"loss": ...})`` write a
  transaction log, ``run-ID.wandb`` in the run's ``wandb/offline-run-*`` folder (found by
  ``launchctl.sync.wandb_offline``'s finder: the run's working copy and, for a container
  run, the W&B folder the agent mounted for it), which holds the run's history and summary
  (offline, W&B's client writes no ``files/wandb-summary.json``); it is read with the
  ``wandb`` package's own record definitions (``wandb.proto``), so it needs W&B's client
  installed beside launchctl, as ``launchctl sync`` does;
- as JSON lines appended to the file named by ``LAUNCHCTL_METRICS_FILE`` in its
  environment (one object a line, ``{"loss": 0.31, "epoch": 3}``), which a sweep's trial
  gets: ``<run folder>/metrics.jsonl`` for a local-process run, a folder of its own mounted
  at ``/launchctl-metrics`` for a container run (agent/plan.py).

Which value counts is W&B's sweep engine's rule (wandb/sweeps ``src/sweeps/run.py``,
``SweepRun.metric_extremum``, used by ``bayes_search._construct_gp_data``): every finite
value the run logged (its history, its metrics file) and its summary value, the smallest
when the goal is to minimize (W&B's default goal), the largest when it is to maximize. A
value that is not a number, NaN or infinite is no value. A run that reported no finite
value of the metric is a failed trial: ``Score(None, "none", why)``.

What a run wrote is untrusted: no symbolic link is followed anywhere on the way (a link is
said and not read), only a regular file is read, at most ``MAX_READ`` bytes of a metrics
file (the end of a longer one) and ``MAX_LOG`` of a transaction log; lines longer than
``MAX_LINE``, lines that are not a JSON object and records that do not decode are
skipped. Nothing here raises for anything a run wrote.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from launchctl import paths
from launchctl.runners.base import METRICS_ENV, METRICS_FILE

__all__ = [
    "MAX_READ", "METRICS_ENV", "Score", "history", "metrics_file_places", "read_metric", "score",
]  # fmt: skip

MAX_READ = 16 << 20  # bytes of a metrics file or a summary read at most
MAX_STEPS = 100_000  # values of a metric's history kept at most (its first ones)
MAX_LINE = 64 << 10  # a longer line is skipped
SOURCE_FILE = "metrics-file"
SOURCE_WANDB = "wandb-offline"
SOURCE_NONE = "none"
MAX_LOG = 1 << 30  # bytes of a W&B transaction log read at most
MAX_RECORD = 16 << 20  # a longer record in it is dropped
LOG_BLOCK = 32 * 1024
WANDB_LOG_IDENT = b":W&B"
WANDB_LOG_HEADER = 7
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


@dataclass(frozen=True)
class Score:
    """A trial's metric: ``value`` None means the run reported none (a failed trial)."""

    value: float | None
    source: str  # "metrics-file", "wandb-offline" or "none"
    why: str | None = None  # one line: why there is no value, or what was left unread


def metrics_file_places() -> list[tuple[str, ...]]:
    """Where, in a run's folder, its metrics file is: a local-process run's, then a
    container run's (in the folder mounted at ``METRICS_MOUNT``)."""
    return [(METRICS_FILE,), (paths.RUN_METRICS_DIR, METRICS_FILE)]


def score(store: Any, run: dict[str, Any], metric: str, goal: str | None = None) -> Score:
    """The value of ``metric`` that ``run`` reported (its row; ``store`` gives the folder).

    ``goal``: ``maximize`` takes the largest value the run reported, anything else the
    smallest (W&B's default goal is ``minimize``)."""
    run_dir = paths.run_dir(str(run["id"]), store.root)
    notes: list[str] = []
    found: list[tuple[float, str]] = []
    for place in metrics_file_places():
        values = _file_values(run_dir, place, metric, notes)
        found += [(v, SOURCE_FILE) for v in values]
    found += [(v, SOURCE_WANDB) for v in _wandb_values(store.root, run, metric, notes)]
    if not found:
        why = f"the run reported no finite value of {metric!r}"
        if notes:
            why += f" ({'; '.join(notes)})"
        return Score(None, SOURCE_NONE, why)
    pick = max if goal == "maximize" else min
    value, source = pick(found, key=lambda item: item[0])
    return Score(value, source, "; ".join(notes) or None)


def history(
    store: Any, run: dict[str, Any], metric: str, max_steps: int = MAX_STEPS
) -> list[float]:
    """The finite values of ``metric`` in the run's metrics file, in the order written: one
    a step, as W&B's history rows (early termination judges a running trial by them).

    Read from the file's start (steps count from it): at most ``MAX_READ`` bytes (a line
    cut there is dropped) and ``max_steps`` values. Untrusted as ``score``'s reading: no
    link followed, only a regular file, bad lines skipped; never raises (no file, an
    unreadable one: an empty history)."""
    run_dir = paths.run_dir(str(run["id"]), store.root)
    for place in metrics_file_places():
        try:
            with _open(run_dir, place) as fh:
                data = fh.read(MAX_READ + 1)
        except OSError:
            continue
        if len(data) > MAX_READ:
            data = data[: data.rfind(b"\n", 0, MAX_READ) + 1]
        elif not data.endswith(b"\n"):  # a line being written: not yet a step
            data = data[: data.rfind(b"\n") + 1]
        return read_metric(data, metric)[:max_steps]
    return []


def read_metric(data: bytes, metric: str, truncated: bool = False) -> list[float]:
    """The finite values of ``metric`` in JSON lines ``data``, in order. ``truncated``: the
    data starts mid-file, so its first (partial) line is dropped."""
    lines = data.split(b"\n")
    if truncated and lines:
        lines = lines[1:]
    values = []
    for line in lines:
        if not line.strip() or len(line) > MAX_LINE:
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            continue
        if isinstance(item, dict):
            value = _number(item.get(metric))
            if value is not None:
                values.append(value)
    return values


def _number(value: Any) -> float | None:
    """A finite number, else None (booleans, text, NaN and infinities are no value)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _file_values(
    run_dir: Path, place: tuple[str, ...], metric: str, notes: list[str]
) -> list[float]:
    where = "/".join(place)
    try:
        data, truncated = _read(run_dir, place)
    except FileNotFoundError:
        return []
    except OSError as exc:
        notes.append(f"{where} {_unreadable(exc)}")
        return []
    if truncated:
        notes.append(f"{where} is over {MAX_READ >> 20} MiB: only its end was read")
    return read_metric(data, metric, truncated)


def _wandb_values(home: Path, run: dict[str, Any], metric: str, notes: list[str]) -> list[float]:
    """``metric``'s values in the run's own W&B offline folders: every value it logged
    (history) and its final summary (the newest folder's), read from each folder's
    transaction log, ``run-ID.wandb`` (W&B's client writes no ``wandb-summary.json``
    offline: core/internal/stream/sender.go uploads it, and offline there is no sender)."""
    from launchctl.sync import wandb_offline

    found = wandb_offline.find(home, [run])
    notes += [line.split(": ", 1)[-1] for line in found.skipped]
    if not found.folders:
        return []
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError:
        notes.append("the wandb package is not installed for launchctl: W&B's logs not read")
        return []
    run_dir = paths.run_dir(str(run["id"]), home)
    history: list[float] = []
    summary: float | None = None
    for folder in sorted(found.folders, key=lambda f: PurePosixPath(f.folder).name):
        place = (*PurePosixPath(folder.folder).parts, f"run-{folder.wandb_id}.wandb")
        try:
            logged, last = _log_values(run_dir, place, metric, wandb_internal_pb2, notes)
        except OSError as exc:
            notes.append(f"{'/'.join(place)} {_unreadable(exc)}")
            continue
        history += logged
        summary = last if last is not None else summary
    return history + ([summary] if summary is not None else [])


def _log_values(
    run_dir: Path, place: tuple[str, ...], metric: str, pb: Any, notes: list[str]
) -> tuple[list[float], float | None]:
    """The metric's history values and last summary value in one W&B transaction log."""
    history: list[float] = []
    summary: float | None = None
    with _open(run_dir, place) as fh:
        for data in _log_records(fh, notes, "/".join(place)):
            record = pb.Record()
            try:
                record.ParseFromString(data)
            except Exception:  # protobuf's DecodeError, or worse, on bytes a run wrote
                continue
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = record.history.item
            elif kind == "summary":
                items = record.summary.update
            else:
                continue
            for item in items:
                key = item.key or ".".join(item.nested_key)
                if key != metric:
                    continue
                try:
                    value = _number(json.loads(item.value_json))
                except (ValueError, RecursionError):
                    value = None
                if value is not None and kind == "history":
                    history.append(value)
                elif kind == "summary":
                    summary = value
    return history, summary


def _log_records(fh: Any, notes: list[str], where: str) -> Iterator[bytes]:
    """The records of a W&B transaction log: LevelDB's log format (32 KiB blocks of
    chunks, each with a 7-byte header: checksum, little-endian length, type) after W&B's
    own 7-byte header (``:W&B``, magic, version): core/pkg/leveldb/record.go. A chunk
    that does not fit its block ends that block; a record over ``MAX_RECORD`` is dropped;
    the log is read up to ``MAX_LOG`` bytes."""
    if fh.read(len(WANDB_LOG_IDENT)) != WANDB_LOG_IDENT:
        notes.append(f"{where} is not a W&B transaction log")
        return
    fh.seek(WANDB_LOG_HEADER)
    pos = WANDB_LOG_HEADER
    pending: bytearray | None = None
    while pos < MAX_LOG:
        block = fh.read(LOG_BLOCK - pos % LOG_BLOCK)
        if not block:
            return
        pos += len(block)
        i = 0
        while len(block) - i >= 7:
            length = int.from_bytes(block[i + 4 : i + 6], "little")
            kind = block[i + 6]
            payload = block[i + 7 : i + 7 + length]
            if kind == 0 or len(payload) < length:  # padding, or a chunk cut short
                break
            i += 7 + length
            if kind == 1:
                pending = None
                yield payload
            elif kind == 2:
                pending = bytearray(payload)
            elif kind in (3, 4) and pending is not None:
                pending += payload
                if len(pending) > MAX_RECORD:
                    pending = None
                elif kind == 4:
                    yield bytes(pending)
                    pending = None
    notes.append(f"{where} is over {MAX_LOG >> 20} MiB: only its start was read")


def _read(run_dir: Path, place: tuple[str, ...]) -> tuple[bytes, bool]:
    """The last ``MAX_READ`` bytes of the regular file ``run_dir/place`` and whether there
    was more."""
    with _open(run_dir, place) as fh:
        size = os.fstat(fh.fileno()).st_size
        truncated = size > MAX_READ
        if truncated:
            fh.seek(size - MAX_READ)
        return fh.read(MAX_READ), truncated


def _open(run_dir: Path, place: tuple[str, ...]) -> BinaryIO:
    """The regular file ``run_dir/place``, opened with no link followed on the way (ELOOP)
    and nothing but a regular file opened (a FIFO neither blocks nor is read)."""
    fd = os.open(run_dir, _DIR_FLAGS)
    try:
        for part in place[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        file_fd = os.open(place[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    fh = os.fdopen(file_fd, "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, "not a regular file")
    return fh


def _unreadable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link (or under one): not read"
    if exc.errno == errno.ENOTDIR:
        return "is not under a folder of the run's own: not read"
    if exc.errno == errno.EINVAL:
        return "is not a regular file: not read"
    return f"cannot be read ({exc.strerror or exc})"
