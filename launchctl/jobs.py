"""Jobs: what to run. Code jobs are content-addressed snapshots kept in the store."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import stat
import tarfile
from pathlib import Path
from typing import Any

from launchctl import identity, paths
from launchctl.errors import LaunchctlError, UsageError
from launchctl.store import Row, Store, dumps

SOURCE_TYPES = ("code", "image", "git")
# Never part of a code snapshot: VCS data, caches, environments, local W&B output.
EXCLUDED_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox", "node_modules",
     ".mypy_cache", ".pytest_cache", ".ruff_cache", "wandb", ".ipynb_checkpoints"}
)  # fmt: skip
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
DEFAULT_PROJECT = "uncategorized"
_PY = re.compile(r"^python(\d+(\.\d+)?)?$")


def parse_entrypoint(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise UsageError("entry point must be a string or a list of strings")
        return list(value)
    if not isinstance(value, str):
        raise UsageError("entry point must be a string or a list of strings")
    try:
        parts = shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"cannot parse entry point {value!r}: {exc}") from None
    return parts


def parse_job_ref(ref: str) -> tuple[str, str]:
    """``name[:alias]`` -> (name, alias); the alias defaults to ``latest``."""
    name, _, alias = ref.partition(":")
    if not name:
        raise UsageError(f"invalid job {ref!r}: expected NAME or NAME:ALIAS")
    return name, alias or "latest"


def _job_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "job"
    return name[:64]


def _is_dir(path: str | Path) -> bool:
    """``Path.is_dir`` that says no, rather than raising, for names the OS refuses."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def is_git_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "git@", "ssh://", "git://", "file://")) or (
        uri.endswith(".git") and not _is_dir(uri)
    )


def _walk(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for fname in sorted(filenames):
            if fname.endswith(EXCLUDED_SUFFIXES):
                continue
            full = Path(dirpath) / fname
            found.append((full.relative_to(root).as_posix(), full))
    found.sort()
    return found


def snapshot_directory(path: Path) -> tuple[str, bytes, int]:
    """Pack a directory into a reproducible tar.gz. Returns (digest, data, file count).

    The digest covers each file's path, executable bit and content, so the same
    content always gives the same digest, wherever and whenever it is packed.
    """
    files = _walk(path)
    digest = hashlib.sha256()
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for rel, full in files:
            st = full.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                info.type = tarfile.SYMTYPE
                info.linkname = target
                info.mode = 0o777
                tar.addfile(info)
                digest.update(f"L\0{rel}\0{target}\0".encode())
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            if total > MAX_SNAPSHOT_BYTES:
                raise LaunchctlError(
                    f"{path} holds over {MAX_SNAPSHOT_BYTES >> 20} MiB of files; keep data"
                    " out of the code directory or use an image job"
                )
            executable = bool(st.st_mode & stat.S_IXUSR)
            info.mode = 0o755 if executable else 0o644
            data = full.read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            digest.update(f"F\0{rel}\0{int(executable)}\0".encode())
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest(), buf.getvalue(), len(files)


def extract_snapshot(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="tar")


def _check_entrypoint_in(entrypoint: list[str], root: Path, files: set[str]) -> None:
    if len(entrypoint) >= 2 and _PY.match(Path(entrypoint[0]).name):
        script = entrypoint[1]
        if script.endswith(".py") and not script.startswith("-") and script not in files:
            raise LaunchctlError(f"entry point file {script} not found in {root}")


def _version_key(*parts: Any) -> str:
    return hashlib.sha256(dumps(list(parts)).encode()).hexdigest()


def create_code_job(
    store: Store,
    path: str,
    *,
    entrypoint: list[str],
    name: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    dockerfile: str | None = None,
) -> tuple[Row, bool]:
    root = paths.user_path(path)
    if not _is_dir(root):
        raise LaunchctlError(f"code directory {path} does not exist or is not a directory")
    if not entrypoint:
        raise UsageError("a code job needs an entry point: pass -E, e.g. -E 'python train.py'")
    root = root.resolve()
    digest, data, count = snapshot_directory(root)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = set(tar.getnames())
    _check_entrypoint_in(entrypoint, root, names)
    if dockerfile and dockerfile not in names:
        raise LaunchctlError(f"dockerfile {dockerfile} not found in {root}")
    job_name = check_job_name(name) if name else _job_name(root.name)
    return store.jobs.add_version(
        name=job_name,
        snapshot=(digest, data, count),
        source_type="code",
        entity=entity or identity.default_entity(),
        project=project or DEFAULT_PROJECT,
        digest=_version_key("code", digest, entrypoint, dockerfile),
        source={"snapshot": digest, "path": str(root), "files": count},
        entrypoint=entrypoint,
        dockerfile=dockerfile,
    )


def create_image_job(
    store: Store,
    image: str,
    *,
    entrypoint: list[str],
    name: str | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> tuple[Row, bool]:
    if not image or any(c.isspace() for c in image):
        raise UsageError(f"invalid image name {image!r}")
    default = _job_name(image.rsplit("/", 1)[-1].replace(":", "_"))
    return store.jobs.add_version(
        name=check_job_name(name) if name else default,
        source_type="image",
        entity=entity or identity.default_entity(),
        project=project or DEFAULT_PROJECT,
        digest=_version_key("image", image, entrypoint),
        source={"image": image},
        entrypoint=entrypoint,
        dockerfile=None,
    )


def create_git_job(
    store: Store,
    remote: str,
    *,
    entrypoint: list[str],
    commit: str | None = None,
    name: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    dockerfile: str | None = None,
) -> tuple[Row, bool]:
    if not entrypoint:
        raise UsageError("a git job needs an entry point: pass -E, e.g. -E 'python train.py'")
    check_git_remote(remote, UsageError)
    check_git_commit(commit, UsageError)
    base = remote.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return store.jobs.add_version(
        name=check_job_name(name) if name else _job_name(base),
        source_type="git",
        entity=entity or identity.default_entity(),
        project=project or DEFAULT_PROJECT,
        digest=_version_key("git", remote, commit, entrypoint, dockerfile),
        source={"git": {"remote": remote, "commit": commit}},
        entrypoint=entrypoint,
        dockerfile=dockerfile,
    )


def check_git_remote(remote: str, error: type[Exception]) -> str:
    """A git URL that git could read as an option (``--upload-pack=...``) is refused."""
    if not remote.strip():
        raise error("a git job needs a repository URL")
    if remote.startswith("-"):
        raise error(f"invalid git URL {remote!r}: it starts with '-'")
    if any(ord(c) < 32 or ord(c) == 127 for c in remote):
        raise error(f"invalid git URL {remote!r}: it holds control characters")
    return remote


def check_git_commit(commit: str | None, error: type[Exception]) -> str | None:
    """A commit, tag or branch name; never one that git could read as an option."""
    if commit is None:
        return None
    if commit.startswith("-"):
        raise error(f"invalid git hash {commit!r}: it starts with '-'")
    if not re.fullmatch(r"[0-9a-fA-F]{4,40}|[\w./-]+", commit):
        raise error(f"invalid git hash {commit!r}")
    return commit


def check_job_name(name: str) -> str:
    from launchctl.queues import check_name

    return check_name(name, "job")
