"""Runs that used wandb themselves, offline: their ``wandb/offline-run-*`` folders, uploaded
with W&B's own ``wandb sync``.

Where the folders are: ``wandb.init()`` writes under ``WANDB_DIR``, else the current
folder (wandb/sdk/wandb_settings.py ``Settings.wandb_dir``), in ``wandb/offline-run-
DATE_TIME-RUN_ID`` with the transaction log ``run-RUN_ID.wandb`` inside
(``Settings.sync_dir``, ``sync_file``). A local-process run starts in its working copy
(``runs.workdir``), so its folders are in ``<workdir>/wandb``. Only those are looked at:
never a ``WANDB_DIR`` the run chose, never a folder outside the run's own folder.

What a job carried is not trusted: a symbolic link named ``wandb`` or
``wandb/offline-run-x`` (say, to another user's files) is skipped and said, and every
folder is first copied, without following a link, into a private temporary folder that
``wandb sync`` then reads. A link inside the folder (``files/secret -> ~/.ssh/id_rsa``)
is left out of the copy, so W&B's uploader cannot read through it either; a link to a
file inside the run's own folder (``wandb.save`` makes those) is copied as that file.
(W&B's uploader also refuses a server-given file name that leads out of the run's files
folder: core/internal/runfiles/uploader.go, ``IsLocal``.)

W&B's CLI is the one of the ``wandb`` package in launchctl's own Python
(``python -m wandb``), else a ``wandb`` on ``PATH``. It gets the server and the key in
its environment (``WANDB_BASE_URL``, ``WANDB_API_KEY``), never on its command line, and
``--include-synced``: what this server has is launchctl's record
(``wandb_offline_syncs``), per server, not W&B's ``.synced`` marker. A folder counts as
sent when ``wandb sync`` exits 0 and wrote its marker (core/internal/runsync/runsyncer.go
``markSynced``, which it writes only after a clean sync).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from launchctl import paths, states
from launchctl.errors import LaunchctlError
from launchctl.store.wandb_offline import WandbOfflineTable
from launchctl.sync.wire import Credentials, one_line

PREFIX = "offline-run-"
# What a W&B run id may be (wandb/sdk/lib/runid.py makes [a-z0-9]{8}; users may pick
# letters, digits, - and _); anything else in a log's name is not taken as a run id.
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
WANDB_FOLDER = "wandb"
FILES_FOLDER = "files"  # the run's files, next to its transaction log (Settings.files_dir)
RETRY_MAX = 5
RETRY_WAIT_MAX_S = 10
SYNC_TIMEOUT_S = 900.0  # per folder; W&B's own uploads retry for minutes before giving up
BATCH = 20  # folders per ``wandb sync`` call: its start-up once, progress every batch
NO_WANDB = (
    "the wandb package is not installed for launchctl's Python and no `wandb` is on PATH:"
    " runs' wandb offline folders wait (pip install wandb, then sync again)"
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


class WandbSyncFailed(LaunchctlError):
    """W&B's ``wandb sync`` did not upload a folder (the folder waits for the next sync)."""


@dataclass(frozen=True)
class Folder:
    """One ``offline-run-*`` folder of one launchctl run."""

    run_id: str
    entity: str
    project: str
    folder: str  # relative to the run's folder, e.g. code/wandb/offline-run-20260101_000000-x
    wandb_id: str  # the W&B run id, from its transaction log's name (run-ID.wandb)
    size: int  # bytes of its regular files


@dataclass
class Found:
    """What a look at some runs found: the folders, and what was skipped and why."""

    folders: list[Folder] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line each


def wandb_command() -> list[str] | None:
    """W&B's CLI: launchctl's own Python's ``wandb`` package, else ``wandb`` on PATH."""
    try:
        present = importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["wandb"] is None
        present = False
    if present:
        return [sys.executable, "-m", "wandb"]
    found = shutil.which("wandb")
    return [found] if found else None


def candidate_runs(store: Any, since: float | None = None) -> list[dict[str, Any]]:
    """Runs that ended and had a working copy: where a run's folders can be. A running
    run's folder is still being written, so it waits until the run ends."""
    return WandbOfflineTable(store.db).finished_runs(sorted(states.TERMINAL), since)


def find(home: Path, runs: list[dict[str, Any]]) -> Found:
    """The ``offline-run-*`` folders of ``runs`` (rows of the runs table)."""
    found = Found()
    for run in runs:
        for item in _folders_of(home, run, found.skipped):
            found.folders.append(item)
    return found


def owed_folders(
    store: Any, base_url: str, *, since: float | None = None, run_ids: set[str] | None = None
) -> Found:
    """The folders ``base_url`` does not have yet (of the runs ``run_ids``, if given)."""
    runs = candidate_runs(store, since)
    if run_ids is not None:
        runs = [r for r in runs if r["id"] in run_ids]
    found = find(store.root, runs)
    table = WandbOfflineTable(store.db)
    have: dict[str, set[str]] = {}
    owed = []
    for item in found.folders:
        if item.run_id not in have:
            have[item.run_id] = table.synced(item.run_id, base_url)
        if item.folder not in have[item.run_id]:
            owed.append(item)
    found.folders = owed
    return found


def _folders_of(home: Path, run: dict[str, Any], skipped: list[str]) -> Iterator[Folder]:
    """The run's offline folders: in ``<working copy>/wandb`` (a local-process run's
    client writes there) and in ``<run folder>/wandb-dir/wandb`` (a container run that
    asked for offline mode gets that folder as its WANDB_DIR: agent/plan.py)."""
    run_id = str(run["id"])
    run_dir = paths.run_dir(run_id, home)
    places = []
    workdir = run.get("workdir")
    rel = _inside(Path(str(workdir)), run_dir) if workdir else None
    if rel is not None:  # else recorded outside the run's folder: not the run's own area
        places.append([*rel.parts, WANDB_FOLDER])
    places.append([paths.RUN_WANDB_DIR, WANDB_FOLDER])
    for parts in places:
        yield from _folders_in(run, run_dir, parts, skipped)


def _folders_in(
    run: dict[str, Any], run_dir: Path, parts: list[str], skipped: list[str]
) -> Iterator[Folder]:
    run_id = str(run["id"])
    try:
        with _open_chain(run_dir, parts) as wandb_fd:
            for entry in sorted(os.scandir(wandb_fd), key=lambda e: e.name):
                if not entry.name.startswith(PREFIX):
                    continue
                where = str(PurePosixPath(*parts, entry.name))
                if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                    skipped.append(
                        f"run {run_id}: {one_line(where)} is not a folder of its own"
                        " (a symbolic link?): skipped"
                    )
                    continue
                item = _folder(run, where, wandb_fd, entry.name)
                if item is None:
                    skipped.append(
                        f"run {run_id}: {one_line(where)} has no W&B transaction log"
                        " (run-ID.wandb): skipped"
                    )
                else:
                    yield item
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return
    except OSError as exc:  # a link (ELOOP) or a folder it may not read
        skipped.append(
            f"run {run_id}: {one_line(str(PurePosixPath(*parts)))} cannot be read safely"
            f" ({exc.strerror}): skipped"
        )


def _folder(run: dict[str, Any], where: str, parent_fd: int, name: str) -> Folder | None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        logs = []
        for entry in os.scandir(fd):
            if (
                entry.name.startswith("run-")
                and entry.name.endswith(".wandb")
                and entry.is_file(follow_symlinks=False)
            ):
                logs.append(entry.name)
        if len(logs) != 1 or not RUN_ID.fullmatch(logs[0][len("run-") : -len(".wandb")]):
            return None
        size = 0
        for rel, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            if rel == ".":  # what copy_folder copies
                dirs[:] = [d for d in dirs if d == FILES_FOLDER]
                files = logs
            for file in files:
                st = os.stat(file, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    size += st.st_size
    finally:
        os.close(fd)
    return Folder(
        run_id=str(run["id"]),
        entity=str(run.get("entity") or ""),
        project=str(run.get("project") or ""),
        folder=where,
        wandb_id=logs[0][len("run-") : -len(".wandb")],
        size=size,
    )


def _inside(path: Path, root: Path) -> PurePosixPath | None:
    """``path`` relative to ``root`` when it is ``root`` or below it (lexically), else None."""
    try:
        rel = Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return None
    if any(p in ("..", "") for p in rel.parts):
        return None
    return PurePosixPath(*rel.parts)


@contextmanager
def _open_chain(root: Path, parts: list[str]) -> Iterator[int]:
    """An fd of ``root/parts...``, no link followed on the way (ELOOP if one is met)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if part in (".", ""):
                continue
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def copy_folder(home: Path, item: Folder, dest: Path) -> int:
    """Copy what ``wandb sync`` reads of ``item`` (its transaction log and ``files/``)
    into ``dest`` (created); the number of entries left out.

    No link is followed on the way to a file. A link in the folder is copied as the file
    it names only when that file is in the run's own folder, reached with no further link
    (``wandb.save`` links the files it saves: files/model.pt -> /abs/path/model.pt); any
    other link, and anything not a regular file or folder, is left out.
    """
    left_out = 0
    run_dir = paths.run_dir(item.run_id, home)
    parts = list(PurePosixPath(item.folder).parts)
    with _open_chain(run_dir, parts) as top:
        dest.mkdir(mode=0o700)
        for rel, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            if rel == ".":  # what ``wandb sync`` reads: the log and files/, not logs/ or tmp/
                dirs[:] = [d for d in dirs if d == FILES_FOLDER]
                files = [f for f in files if f == f"run-{item.wandb_id}.wandb"]
            target = dest / rel
            for name in dirs:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    (target / name).mkdir(mode=0o700, exist_ok=True)
                else:
                    left_out += 1
            for name in files:
                here = run_dir.joinpath(*parts, rel, name)
                fd = _open_file(run_dir, dir_fd, name, here)
                if fd is None:
                    left_out += 1
                    continue
                with os.fdopen(fd, "rb") as src:
                    if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                        left_out += 1
                        continue
                    out = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    return left_out


def _open_file(run_dir: Path, dir_fd: int, name: str, here: Path) -> int | None:
    """An fd of the regular file ``name`` (in ``dir_fd``, which is ``here``'s folder), or of
    the file it links to when that is inside ``run_dir`` with no other link; else None."""
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        pass
    try:
        link = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None
    pointed = Path(os.path.normpath(here.parent / link))
    for root in (run_dir, Path(os.path.realpath(run_dir))):
        rel = _inside(pointed, root)
        if rel is None or not rel.parts:
            continue
        try:
            with _open_chain(run_dir, list(rel.parts[:-1])) as parent:
                return os.open(rel.parts[-1], _FILE_FLAGS, dir_fd=parent)
        except OSError:
            return None
    return None


def sync_env(creds: Credentials, scratch: Path) -> dict[str, str]:
    """``wandb sync``'s environment: the user's, without W&B's settings that would point it
    elsewhere (and without launchctl's own), plus the server and the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LAUNCHCTL_"))}
    env["WANDB_BASE_URL"] = creds.base_url
    if creds.api_key:
        env["WANDB_API_KEY"] = creds.api_key
    env["WANDB_DIR"] = str(scratch)  # its own debug logs go to the scratch folder
    env["WANDB_SILENT"] = "true"
    # W&B retries for minutes by default; a server that went away mid-sync should leave
    # the folder owed for the next pass sooner (wandb/sdk/wandb_settings.py, ``x_*_retry_*``;
    # ``WANDB__NAME`` sets ``x_name``: ``Settings.update_from_env_vars``).
    for kind in ("GRAPHQL", "FILE_STREAM", "FILE_TRANSFER"):
        env[f"WANDB__{kind}_RETRY_MAX"] = str(RETRY_MAX)
        env[f"WANDB__{kind}_RETRY_WAIT_MAX_SECONDS"] = str(RETRY_WAIT_MAX_S)
    return env


def wandb_run_path(item: Folder, entity: str | None, project: str | None) -> str:
    """The W&B run a folder becomes: the sync's overrides, else the launchctl run's entity
    and project (which the run was given as WANDB_ENTITY / WANDB_PROJECT)."""
    return f"{entity or item.entity}/{project or item.project}/{item.wandb_id}"


def upload(
    home: Path,
    creds: Credentials,
    item: Folder,
    *,
    entity: str | None = None,
    project: str | None = None,
    command: list[str] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> str:
    """Upload one folder with W&B's ``wandb sync``; the W&B run path it became. Raises
    ``WandbSyncFailed`` (one line, never the key) when it did not go."""
    ((_, remote, error),) = upload_batch(
        home, creds, [item], entity=entity, project=project, command=command, say=say
    )
    if remote is None:
        raise WandbSyncFailed(error or "wandb sync failed")
    return remote


def upload_batch(
    home: Path,
    creds: Credentials,
    items: list[Folder],
    *,
    entity: str | None = None,
    project: str | None = None,
    command: list[str] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[tuple[Folder, str | None, str | None]]:
    """Upload ``items`` with one ``wandb sync`` (its start-up, about a second, is paid
    once); for each, the W&B run path it became, or None and the one-line reason."""
    command = command or wandb_command()
    if command is None:
        return [(item, None, NO_WANDB) for item in items]
    with tempfile.TemporaryDirectory(prefix="launchctl-wandb-sync-") as scratch:
        copies = []
        for n, item in enumerate(items):
            copy = Path(scratch) / str(n) / PurePosixPath(item.folder).name
            copy.parent.mkdir(mode=0o700)
            left_out = copy_folder(home, item, copy)
            if left_out:
                say(
                    f"run {item.run_id}: {left_out} link(s) or special file(s) in"
                    f" {one_line(item.folder)} not uploaded"
                )
            copies.append(copy)
        argv = [*command, "sync", "--include-synced", "-n", "4"]
        if entity:
            argv += ["--entity", entity]
        if project:
            argv += ["--project", project]
        argv += [str(copy) for copy in copies]
        why = None
        proc = None
        try:
            proc = subprocess.run(
                argv,
                cwd=scratch,
                env=sync_env(creds, Path(scratch)),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=SYNC_TIMEOUT_S * len(items),
            )
        except subprocess.TimeoutExpired:
            why = f"took over {SYNC_TIMEOUT_S * len(items):.0f} s; it waits for the next sync"
        except OSError as exc:
            why = f"cannot start wandb sync: {exc.strerror}"
        results: list[tuple[Folder, str | None, str | None]] = []
        for item, copy in zip(items, copies, strict=True):
            # W&B writes the marker only for a log it synced cleanly (runsyncer.go).
            if proc is not None and (copy / f"run-{item.wandb_id}.wandb.synced").exists():
                results.append((item, wandb_run_path(item, entity, project), None))
                continue
            reason = why or f"(exit {proc.returncode if proc else '-'}): {_last_line(proc, creds)}"
            results.append(
                (
                    item,
                    None,
                    f"run {item.run_id}: wandb sync of {one_line(item.folder)} failed {reason}",
                )
            )
    return results


def _last_line(proc: subprocess.CompletedProcess[str] | None, creds: Credentials) -> str:
    if proc is None:
        return "no output"
    text = "\n".join([proc.stderr or "", proc.stdout or ""])
    if creds.api_key:
        text = text.replace(creds.api_key, "***")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return one_line(lines[-1] if lines else "no output", 200)


def record(store: Any, base_url: str, item: Folder, wandb_path: str) -> None:
    WandbOfflineTable(store.db).record(item.run_id, base_url, item.folder, wandb_path)


def links(store: Any, run_id: str) -> list[dict[str, Any]]:
    """The W&B runs this run's folders became, per server (for ``runs show``)."""
    return WandbOfflineTable(store.db).for_run(run_id)


# -- the engine's step (launchctl.sync.engine.STEPS) --------------------------------

STEP = "wandb-offline"


def _stderr_once(line: str, _said: set[str] = set()) -> None:  # noqa: B006 - per process
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


# Where the step's own lines go (what waits and why, a folder skipped, a failed upload):
# stderr, once per process; the agent's background sync points it at the agent's log.
say: Callable[[str], None] = _stderr_once


def _overrides(store: Any, target: Any) -> tuple[str | None, str | None]:
    from launchctl.store.settings import SettingsTable

    table = SettingsTable(store.db)
    return (
        target.entity or table.get("sync.entity"),
        target.project or table.get("sync.project"),
    )


def _owed_for(store: Any, target: Any) -> Found:
    """The target's folders, of runs whose entity ``target.user`` is a member of."""
    found = owed_folders(
        store,
        target.base_url,
        since=target.since,
        run_ids=set(target.run_ids) if target.run_ids is not None else None,
    )
    roles: dict[str, bool] = {}
    kept = []
    for item in found.folders:
        if item.entity not in roles:
            roles[item.entity] = store.teams.role(item.entity, target.user) is not None
        if roles[item.entity]:
            kept.append(item)
    found.folders = kept
    return found


def owed(store: Any, target: Any) -> list[Any]:
    """Each folder the server lacks, as the engine's ``Owed``."""
    from launchctl.sync.engine import Owed

    found = _owed_for(store, target)
    for line in found.skipped:  # said here too: with nothing owed, send is never called
        say(line)
    entity, project = _overrides(store, target)
    waits = ""
    if found.folders and wandb_command() is None:
        waits = "; waits: the wandb package is not installed"
    return [
        Owed(
            step=STEP,
            run_id=item.run_id,
            what=("wandb sync",),
            detail=f"wandb sync of {item.folder} ({item.size} bytes){waits}",
            remote=wandb_run_path(item, entity, project),
            bytes=item.size,
            extra={"folder": item.folder},
        )
        for item in found.folders
    ]


def send(server: Any, target: Any, *, progress: Callable[[Any], None], dry_run: bool) -> list[Any]:
    """Upload each owed folder with ``wandb sync``; record it once it went. A folder that
    fails is said in one line and stays owed; no wandb: one line says the folders wait."""
    from launchctl.sync.engine import Sent

    store = target.store
    found = _owed_for(store, target)
    for line in found.skipped:
        say(line)
    if not found.folders:
        return []
    entity, project = _overrides(store, target)
    command = wandb_command()
    if command is None:
        say(f"{len(found.folders)} wandb offline folder(s) wait: {NO_WANDB}")
        return []
    sent = []
    for start in range(0, len(found.folders), BATCH):
        batch = found.folders[start : start + BATCH]
        results: list[tuple[Folder, str | None, str | None]]
        if dry_run:
            results = [(item, wandb_run_path(item, entity, project), None) for item in batch]
        else:
            results = upload_batch(
                store.root, server.creds, batch, entity=entity, project=project,
                command=command, say=say,
            )  # fmt: skip
        for item, remote, error in results:
            if remote is None:
                say(error or "wandb sync failed")
                continue
            if not dry_run:
                record(store, target.base_url, item, remote)
            done = Sent(
                step=STEP,
                run_id=item.run_id,
                what=("wandb sync",),
                remote=remote,
                bytes=item.size,
                extra={"folder": item.folder},
            )
            progress(done)
            sent.append(done)
    return sent
