"""A job's files as launchctl takes them, without following a link out of the job.

One walk decides, for the snapshot (``job create code``), the image tag and the build
context alike, what a job's folder holds:

- regular files: kept;
- a link whose target (followed to the end) is a file or folder inside the job: kept as a
  link, with its target rewritten relative to the link, so it stays inside wherever the
  job's files are laid out;
- a link leaving the job, a dangling link, a link to a FIFO or device, and FIFOs, sockets
  and devices themselves: left out, and listed (``Special``) so that ``job show`` and the
  build log say what happened to each.

Every file is read with ``O_NOFOLLOW``; every file the agent writes from a job (a working
copy, a build context) goes into a folder it has just made, never through a link.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from launchctl import tarcompat

# Never part of a code snapshot: VCS data, caches, environments, local W&B output.
EXCLUDED_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox", "node_modules",
     ".mypy_cache", ".pytest_cache", ".ruff_cache", "wandb", ".ipynb_checkpoints"}
)  # fmt: skip
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1 << 20
LEFT_OUT = "left out"
KEPT_AS_LINK = "kept as a link"


@dataclass(frozen=True)
class Special:
    """An entry that is not a plain file: what it is and what launchctl does with it."""

    path: str  # relative to the job's root, POSIX
    what: str  # e.g. "link leaving the job (-> /etc/cron.d/x)"
    action: str  # LEFT_OUT, or KEPT_AS_LINK (and to what)

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "what": self.what, "action": self.action}

    def line(self) -> str:
        return f"{self.path}: {self.what}: {self.action}"


@dataclass
class Tree:
    """What a job's folder holds, sorted by path."""

    root: Path
    files: list[tuple[str, bool]] = field(default_factory=list)  # (path, executable)
    links: list[tuple[str, str]] = field(default_factory=list)  # (path, target inside)
    special: list[Special] = field(default_factory=list)

    def entries(self) -> Iterator[tuple[str, str, Any]]:
        """("F", path, executable) and ("L", path, target), in path order."""
        merged = [("F", p, x) for p, x in self.files] + [("L", p, t) for p, t in self.links]
        yield from sorted(merged, key=lambda e: e[1])

    def __len__(self) -> int:
        return len(self.files) + len(self.links)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def scan(
    root: Path,
    *,
    excluded_dirs: frozenset[str] | None = None,
    excluded_suffixes: tuple[str, ...] | None = None,
    skip: frozenset[str] = frozenset(),
) -> Tree:
    """Walk ``root`` (never into a linked folder) and sort what it holds; ``skip``: names at
    the root to pass over (files a build generates in their place)."""
    if excluded_dirs is None or excluded_suffixes is None:
        excluded_dirs = EXCLUDED_DIRS if excluded_dirs is None else excluded_dirs
        excluded_suffixes = EXCLUDED_SUFFIXES if excluded_suffixes is None else excluded_suffixes
    real_root = os.path.realpath(root)
    store = _store_id()
    tree = Tree(root=Path(root))
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        walk_into = []
        names = []
        for d in sorted(dirnames):
            if d in excluded_dirs:
                continue
            rel = (here / d).relative_to(root).as_posix()
            if not _utf8(d):
                tree.special.append(Special(shown(rel), "folder whose name is not UTF-8", LEFT_OUT))
                continue
            try:
                st = (here / d).lstat()
            except OSError:
                continue  # gone since the walk listed it
            if stat.S_ISLNK(st.st_mode):
                names.append(d)  # a link to a folder: an entry, never walked into
            elif (st.st_dev, st.st_ino) == store:
                tree.special.append(Special(rel, STORE, LEFT_OUT))
            else:
                walk_into.append(d)
        dirnames[:] = walk_into
        names += [f for f in filenames if not f.endswith(excluded_suffixes)]
        for name in sorted(names):
            full = here / name
            rel = full.relative_to(root).as_posix()
            if not _utf8(name):
                tree.special.append(Special(shown(rel), "name that is not UTF-8", LEFT_OUT))
                continue
            try:
                st = full.lstat()
            except OSError:
                continue  # gone since the walk listed it
            if here == Path(root) and name in skip:
                if not stat.S_ISREG(st.st_mode):  # say so: the build writes its own file
                    what = f"link (-> {os.readlink(full)})" if stat.S_ISLNK(st.st_mode) else ""
                    if stat.S_ISLNK(st.st_mode) and not _inside(os.path.realpath(full), real_root):
                        what = f"link leaving the job (-> {os.readlink(full)})"
                    action = f"{LEFT_OUT} (the build writes its own {name})"
                    tree.special.append(Special(rel, what or _kind(st.st_mode), action))
                continue
            if stat.S_ISREG(st.st_mode):
                tree.files.append((rel, bool(st.st_mode & stat.S_IXUSR)))
            elif stat.S_ISLNK(st.st_mode):
                _link(tree, full, rel, real_root, excluded_dirs, excluded_suffixes)
            else:
                tree.special.append(Special(rel, _kind(st.st_mode), LEFT_OUT))
    tree.files.sort()
    tree.links.sort()
    tree.special.sort(key=lambda s: s.path)
    return tree


STORE = "launchctl's own store (its database, secrets and runs)"


def _store_id() -> tuple[int, int] | None:
    """The (device, inode) of this launchctl's store folder, where it exists: a job's code
    never holds it (a project-local LAUNCHCTL_HOME would put the secrets in the job)."""
    from launchctl import paths

    try:
        st = os.stat(paths.home())
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_not_store(root: Path) -> str | None:
    """Why ``root`` cannot be a job's code: it is the store, or inside it; else None."""
    from launchctl import paths

    real, store = os.path.realpath(root), os.path.realpath(paths.home())
    if _inside(real, store):
        return f"{root} is launchctl's own store (LAUNCHCTL_HOME) or inside it: copy the code out"
    return None


def _utf8(name: str) -> bool:
    """Whether a file name is text (os.walk gives undecodable bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(rel: str) -> str:
    """A path for a message: bytes that are not UTF-8 shown escaped."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _link(
    tree: Tree,
    full: Path,
    rel: str,
    real_root: str,
    excluded_dirs: frozenset[str] = EXCLUDED_DIRS,
    excluded_suffixes: tuple[str, ...] = EXCLUDED_SUFFIXES,
) -> None:
    target = os.readlink(full)
    real = os.path.realpath(full)
    if not _inside(real, real_root):
        tree.special.append(Special(rel, f"link leaving the job (-> {target})", LEFT_OUT))
        return
    from launchctl import paths

    inside = Path(os.path.relpath(real, real_root)).parts
    if (
        any(part in excluded_dirs for part in inside)
        or real.endswith(excluded_suffixes)
        or _inside(real, os.path.realpath(paths.home()))
    ):
        # Into what the snapshot leaves out (.git, wandb, caches, the store): it would dangle.
        what = f"link into what the job leaves out (-> {target})"
        tree.special.append(Special(rel, what, LEFT_OUT))
        return
    try:
        st = os.stat(real)
    except OSError:
        tree.special.append(Special(rel, f"dangling link (-> {target})", LEFT_OUT))
        return
    inner = os.path.relpath(real, os.path.realpath(full.parent))
    if stat.S_ISDIR(st.st_mode):
        tree.links.append((rel, inner))
        tree.special.append(Special(rel, f"link to a folder (-> {target})", KEPT_AS_LINK))
    elif stat.S_ISREG(st.st_mode):
        tree.links.append((rel, inner))
        if inner != target:
            tree.special.append(Special(rel, f"link (-> {target})", f"{KEPT_AS_LINK} to {inner}"))
    else:
        what = f"link to a {_kind(st.st_mode)} (-> {target})"
        tree.special.append(Special(rel, what, LEFT_OUT))


def _regular(fd: int, what: object) -> int:
    """``fd`` when it is a regular file's; else it is closed and OSError raised."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{what} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_nofollow(path: Path) -> int:
    """A read-only descriptor of the regular file ``path``; OSError for a link or others."""
    return _regular(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), path)


def read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path`` itself (never a link's target)."""
    with os.fdopen(open_nofollow(path), "rb") as fh:
        return fh.read()


def open_under(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file ``rel`` in ``root``, opened one folder at
    a time with O_NOFOLLOW: a folder swapped for a link after the scan (to pull a file from
    outside the job into it) makes this fail, where O_NOFOLLOW on the whole path guards
    only its last part."""
    parts = PurePosixPath(rel).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        found = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    return _regular(found, rel)


def read_under(root: Path, rel: str) -> bytes:
    """The bytes of the job's file ``rel`` (see ``open_under``)."""
    with os.fdopen(open_under(root, rel), "rb") as fh:
        return fh.read()


def read_inside(root: Path, rel: str) -> bytes | None:
    """The content of the job's file ``rel`` as the walk would keep it: a regular file, or a
    link to one inside the job; None for anything else (absent, leaving the job, a FIFO...)."""
    full = Path(root) / rel
    if not os.path.lexists(full):
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(full)
    if not _inside(real, real_root) or real == real_root:
        return None
    if any(part in EXCLUDED_DIRS for part in Path(os.path.relpath(real, real_root)).parts):
        return None
    try:
        return read_file(Path(real))
    except OSError:
        return None


def copy_tree(tree: Tree, dest: Path) -> None:
    """Lay out ``tree``'s kept entries in ``dest``, a folder the caller has just made: files
    copied (read with O_NOFOLLOW, written O_EXCL), links made anew with their inside target."""
    made: set[str] = set()

    def parent(rel: str) -> Path:
        folder = PurePosixPath(rel).parent
        if str(folder) != "." and str(folder) not in made:
            (dest / folder).mkdir(parents=True, exist_ok=True)
            made.add(str(folder))
        return dest / rel

    for kind, rel, extra in tree.entries():
        target = parent(rel)
        if kind == "L":
            os.symlink(extra, target)
            continue
        src = open_under(tree.root, rel)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            out = os.open(target, flags, 0o755 if extra else 0o644)
            try:
                while chunk := os.read(src, _CHUNK):
                    os.write(out, chunk)
            finally:
                os.close(out)
        finally:
            os.close(src)


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a new file at ``path``: never through a link, never over what is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


# -- extraction of a snapshot ---------------------------------------------------------------


def extract(data: bytes, dest: Path) -> list[str]:
    """Unpack a snapshot into ``dest``; returns a line for each member left out.

    Only regular files, folders and links whose target stays inside ``dest`` are unpacked
    (tarfile's ``data`` filter, plus: nothing under a link, no link out by ``..``), so a
    snapshot from an older launchctl, or a hand-edited store, cannot make the agent write or
    link outside the working copy.
    """
    import io

    dest.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    links: set[str] = set()

    def keep(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        name = os.path.normpath(member.name)
        why = None
        parts = PurePosixPath(name).parts
        if not (member.isreg() or member.isdir() or member.issym()):
            why = "not a file, folder or link"
        elif any(str(PurePosixPath(*parts[:i])) in links for i in range(1, len(parts))):
            why = "under a link"
        elif member.issym() and (
            os.path.isabs(member.linkname)
            or os.path.normpath(os.path.join(os.path.dirname(name), member.linkname)).startswith(
                ".."
            )
        ):
            why = f"link leaving the job (-> {member.linkname})"
        if member.issym():
            links.add(name)  # kept or not: nothing is unpacked under it
        if why is None:
            try:
                return tarcompat.data_filter(member, path)
            except tarcompat.FilterError as exc:
                why = str(exc)
        skipped.append(f"{member.name}: {why}: {LEFT_OUT}")
        return None

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tarcompat.extractall(tar, dest, keep)  # Debian 12's python3 has no filter=
    # Last, every link is followed to its end: one that leaves dest goes.
    real_dest = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink() and not _inside(os.path.realpath(full), real_dest):
                full.unlink()
                rel = full.relative_to(dest).as_posix()
                skipped.append(f"{rel}: link leaving the job: {LEFT_OUT}")
    return skipped


# -- laying out the same snapshot again -----------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A working copy as ``extract`` left it, held in memory: folders, files (with their
    bytes), links, and the lines ``extract`` said about what it left out.

    An agent starts many runs of one job version; each gets its own fresh copy written from
    this (``write``), never a link to, or a copy of, anything on disk that another run saw:
    what one run does to its working copy cannot reach the next run's.
    """

    dirs: tuple[tuple[str, int, float], ...]  # (path, mode, mtime), parents first
    files: tuple[tuple[str, int, float, bytes], ...]  # (path, mode, mtime, content)
    links: tuple[tuple[str, str], ...]  # (path, target inside)
    skipped: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(len(f[3]) for f in self.files) + 256 * (len(self) + 1)

    def __len__(self) -> int:
        return len(self.dirs) + len(self.files) + len(self.links)

    @classmethod
    def read(cls, root: Path, skipped: list[str]) -> Layout:
        """What ``extract`` has just written into ``root`` (before any run could touch it):
        read without following a link."""
        dirs: list[tuple[str, int, float]] = []
        files: list[tuple[str, int, float, bytes]] = []
        links: list[tuple[str, str]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            for name in sorted(dirnames + filenames):
                full = here / name
                rel = full.relative_to(root).as_posix()
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    links.append((rel, os.readlink(full)))
                elif stat.S_ISDIR(st.st_mode):
                    dirs.append((rel, stat.S_IMODE(st.st_mode), st.st_mtime))
                elif stat.S_ISREG(st.st_mode):
                    files.append((rel, stat.S_IMODE(st.st_mode), st.st_mtime, read_file(full)))
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        dirs.sort()  # parents before their children
        return cls(tuple(dirs), tuple(files), tuple(links), tuple(skipped))

    def write(self, dest: Path) -> list[str]:
        """A fresh working copy in ``dest`` (made here; it must not exist): folders made,
        files written ``O_EXCL | O_NOFOLLOW``, links made anew, modes and times as
        ``extract`` left them. Returns ``extract``'s lines about what it left out."""
        dest.mkdir(parents=True)
        for rel, _mode, _mtime in self.dirs:
            os.mkdir(dest / rel, 0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        for rel, mode, mtime, content in self.files:
            target = dest / rel
            fd = os.open(target, flags, 0o600)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.utime(target, (mtime, mtime), follow_symlinks=False)
        for rel, points_to in self.links:
            os.symlink(points_to, dest / rel)
        for rel, mode, mtime in reversed(self.dirs):  # children first: times stay put
            os.chmod(dest / rel, mode, follow_symlinks=False)
            os.utime(dest / rel, (mtime, mtime), follow_symlinks=False)
        return list(self.skipped)


class LayoutCache:
    """Snapshots laid out by ``extract``, by digest (content-addressed: a digest always
    names the same files), kept in this process up to ``limit`` bytes, the least recently
    used dropped first. A snapshot over a quarter of the limit is not kept."""

    def __init__(self, limit: int = 64 << 20) -> None:
        import threading
        from collections import OrderedDict

        self.limit = limit
        self._items: OrderedDict[str, Layout] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Layout | None:
        with self._lock:
            layout = self._items.get(digest)
            if layout is not None:
                self._items.move_to_end(digest)
            return layout

    def put(self, digest: str, layout: Layout) -> None:
        if layout.size > self.limit // 4:
            return
        with self._lock:
            self._items[digest] = layout
            self._items.move_to_end(digest)
            while sum(item.size for item in self._items.values()) > self.limit:
                self._items.popitem(last=False)


LAYOUTS = LayoutCache()


def extract_cached(
    digest: str, data: Any, dest: Path, cache: LayoutCache | None = None
) -> list[str]:
    """``extract`` of the snapshot ``digest``, whose bytes ``data()`` reads (only when this
    process has not laid it out before): the first time it is unpacked and checked as
    ``extract`` does, and kept; after that each working copy is written from what was kept,
    with no tar, no gzip, and no walk for links leaving the copy (none can be kept)."""
    if cache is None:
        cache = LAYOUTS
    layout = cache.get(digest)
    if layout is not None:
        return layout.write(dest)
    skipped = extract(data(), dest)
    cache.put(digest, Layout.read(dest, skipped))
    return skipped
