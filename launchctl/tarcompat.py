"""tarfile's ``data`` extraction filter on every Python launchctl supports (issue 17).

``tarfile.data_filter`` and ``extractall(filter=...)`` came with Python 3.11.4 (PEP 706).
Debian 12's python3 is 3.11.2 without them, and that is the Python an air-gapped lab
machine has: there the same rules are applied here, member by member. The rules are
CPython 3.11.7's ``_get_filtered_attrs(for_data=True)``; tests/test_dist.py checks that
both give the same answer for hostile members.
"""

from __future__ import annotations

import copy
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

NATIVE = hasattr(tarfile, "data_filter")


class _FilterError(tarfile.TarError):
    pass


# What the data filter raises: tarfile's own class where it has one.
FilterError: type[Exception] = getattr(tarfile, "FilterError", _FilterError)


def data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter: the member as it may be unpacked into dest, or FilterError."""
    if NATIVE:
        return tarfile.data_filter(member, dest)
    return _data_filter(member, dest)


def _inside(path: str, dest: str) -> bool:
    return os.path.commonpath([path, dest]) == dest


def _data_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    name = member.name
    dest_path = os.path.realpath(dest_path)
    if name.startswith(("/", os.sep)):
        name = member.path.lstrip("/" + os.sep)
    if os.path.isabs(name):
        raise FilterError(f"member {member.name!r} has an absolute path")
    target_path = os.path.realpath(os.path.join(dest_path, name))
    if not _inside(target_path, dest_path):
        raise FilterError(
            f"{member.name!r} would be extracted to {target_path!r}, which is outside the"
            " destination"
        )
    mode: int | None = member.mode & 0o755
    if member.isreg() or member.islnk():
        assert mode is not None
        if not mode & 0o100:
            mode &= ~0o111
        mode |= 0o600
    elif member.isdir() or member.issym():
        mode = None
    else:
        raise FilterError(f"{member.name!r} is a special file")
    if member.islnk() or member.issym():
        if os.path.isabs(member.linkname):
            raise FilterError(f"{member.name!r} is a link to an absolute path")
        if member.issym():
            link = os.path.join(dest_path, os.path.dirname(name), member.linkname)
        else:
            link = os.path.join(dest_path, member.linkname)
        link = os.path.realpath(link)
        if not _inside(link, dest_path):
            raise FilterError(
                f"{member.name!r} would link to {link!r}, which is outside the destination"
            )
    kept = copy.copy(member)
    kept.name = name
    kept.mode = mode  # type: ignore[assignment]  # None: the default, as tarfile's filter
    kept.uid = kept.gid = None  # type: ignore[assignment]
    kept.uname = kept.gname = None  # type: ignore[assignment]
    return kept


def extractall(
    tar: tarfile.TarFile,
    dest: Path,
    keep: Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None],
) -> None:
    """``tar.extractall(dest, filter=keep)``, also where tarfile has no ``filter``."""
    if NATIVE:
        tar.extractall(dest, filter=keep)
        return
    dirs: list[tarfile.TarInfo] = []
    for member in tar.getmembers():
        kept = keep(member, str(dest))
        if kept is None:
            continue
        # No attributes from the archive (owner, mode): the filter's mode and the time only.
        tar.extract(kept, dest, set_attrs=False)
        target = os.path.join(dest, kept.name)
        if kept.isreg():
            if kept.mode is not None:
                os.chmod(target, kept.mode)
            os.utime(target, (kept.mtime, kept.mtime))
        elif kept.isdir():
            dirs.append(kept)
    for kept in sorted(dirs, key=lambda m: m.name, reverse=True):  # children first
        os.utime(os.path.join(dest, kept.name), (kept.mtime, kept.mtime))
