"""Where launchctl keeps its state (``$LAUNCHCTL_HOME`` or the platform's user data dir),
and the modes its files get.

The store is private by default: launchctl's own folders are created 0700 and its files
0600 (a process umask of 077). A lab that shares one store through a Unix group sets
``LAUNCHCTL_UMASK=007`` for everyone who uses it (folders 0770, files 0660). Runs get the
user's own umask back: the files a run writes are its own business.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from launchctl.errors import LaunchctlError

ENV_HOME = "LAUNCHCTL_HOME"
ENV_UMASK = "LAUNCHCTL_UMASK"
DEFAULT_UMASK = 0o077
SECRETS_DIR = "secrets"
# Beside the database: the file every launchctl write touches once committed, and the
# folder watched for it (``bell_path``).
BELL_DIR = "bell"
BELL_FILE = "store-changed"
# In a run's folder: a container run's WANDB_DIR on the host, when it asked for W&B's
# offline mode (agent/plan.py), so its ``wandb/offline-run-*`` outlive the container.
RUN_WANDB_DIR = "wandb-dir"
# In a run's folder: a container sweep trial's metrics folder (issue 15, sweeps/results.py).
RUN_METRICS_DIR = "metrics"

# The umask the process had before ``apply_umask``: the one runs are started with.
_user_umask: int | None = None


def home() -> Path:
    """The folder that holds the database, run logs and run working copies."""
    value = os.environ.get(ENV_HOME)
    if value:
        return Path(value).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("launchctl", appauthor=False))


def db_path(root: Path | None = None) -> Path:
    return (root or home()) / "launchctl.db"


def run_dir(run_id: str, root: Path | None = None) -> Path:
    """One folder per run, beside the database: its log and its working copy."""
    return (root or home()) / "runs" / run_id


def bell_path(db: Path) -> Path:
    """The file a launchctl process touches each time it commits a write to the database
    ``db`` (issue 17). Agents watch its folder, not the database: SQLite writes its WAL a
    page at a time, and a watch of it woke every watcher a few dozen times a run."""
    return db.parent / BELL_DIR / BELL_FILE


def open_bell(db: Path) -> int:
    """The bell's folder, opened (a descriptor to touch the bell through, with ``ring``),
    both made with the store's modes if missing. Never through a link: a folder or file
    someone replaced with a link (a shared home's member) is refused with an OSError, and
    nothing is made or touched where it points."""
    folder = bell_path(db).parent
    make_dir(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            made = os.open(BELL_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, file_mode(), dir_fd=fd)  # fmt: skip
        except FileExistsError:
            ring(fd)  # a link in its place: ELOOP here
        else:
            os.fchmod(made, file_mode())
            os.close(made)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ring(bell_dir: int) -> None:
    """Touch the bell in the folder ``bell_dir`` (from ``open_bell``); not through a link."""
    os.utime(BELL_FILE, dir_fd=bell_dir, follow_symlinks=False)


def secrets_dir(root: Path | None = None) -> Path:
    """The owner-only folder that holds the secrets file (always 0700, whatever the umask)."""
    return (root or home()) / SECRETS_DIR


def exposes_store(source: str, root: Path | None = None) -> bool:
    """Whether the host path ``source``, mounted into a container, would show the store: it
    is the store's folder, a path inside it, or a folder above it, once symbolic links,
    ``~`` and ``..`` are resolved."""
    store = os.path.realpath(root or home())
    path = os.path.realpath(user_path(source))
    return (
        path == store
        or path.startswith(store + os.sep)
        or store.startswith(path.rstrip(os.sep) + os.sep)
    )


def store_umask() -> int:
    """The umask for launchctl's own files: ``$LAUNCHCTL_UMASK`` (octal), default 077."""
    value = os.environ.get(ENV_UMASK, "").strip()
    if not value:
        return DEFAULT_UMASK
    digits = value.removeprefix("0o")
    if not re.fullmatch(r"[0-7]{1,4}", digits) or int(digits, 8) & ~0o077:
        raise LaunchctlError(
            f"{ENV_UMASK} must be an octal umask that leaves the owner every right, such as"
            f" 077 (private, the default) or 007 (shared with the home's group); got {value!r}"
        )
    return int(digits, 8)


def dir_mode() -> int:
    """The mode of a folder launchctl creates in its home: 0700, or 0770 with umask 007."""
    return 0o777 & ~store_umask()


def file_mode() -> int:
    """The mode of a file launchctl creates in its home: 0600, or 0660 with umask 007."""
    return 0o666 & ~store_umask()


def apply_umask() -> None:
    """Give this process the store's umask; ``run_umask`` keeps the one it had, for runs."""
    global _user_umask
    previous = os.umask(store_umask())
    if _user_umask is None:
        _user_umask = previous


def run_umask() -> int | None:
    """The user's own umask, for the runs this process starts; None: inherit the current one."""
    return _user_umask


def make_dir(path: Path, mode: int | None = None) -> bool:
    """Create the folder ``path`` with exactly ``mode`` (default ``dir_mode()``), whatever the
    umask; missing parents get ordinary modes. A folder that exists keeps the mode it has
    (an admin's choice is never changed). Returns whether it was created."""
    mode = dir_mode() if mode is None else mode
    try:
        try:
            os.mkdir(path, mode)
        except FileNotFoundError:  # a parent is missing (most often, none is)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def make_file(path: Path, mode: int | None = None) -> bool:
    """Create the empty file ``path`` with exactly ``mode`` (default ``file_mode()``) unless
    it exists; never through a symbolic link. Returns whether it was created."""
    mode = file_mode() if mode is None else mode
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def user_path(value: str) -> Path:
    """A path the user typed, with ``~`` expanded where it names a known user."""
    try:
        return Path(value).expanduser()
    except (RuntimeError, ValueError):  # ~nosuchuser, or a name the OS refuses
        return Path(value)
