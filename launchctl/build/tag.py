"""Image names: a content hash of everything that goes into the image, so equal inputs reuse it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from launchctl.jobs import EXCLUDED_DIRS, EXCLUDED_SUFFIXES

TAG_LENGTH = 16
_CHUNK = 1 << 20


def context_digest(root: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 over each file's path, executable bit and content (symlinks: their target).

    Walks in sorted order and skips what a code snapshot skips (.git, caches, venvs), plus the
    root-level names in ``skip`` (files the build generates), so the digest is reproducible.
    """
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        here = Path(dirpath)
        for name in sorted(filenames):
            if name.endswith(EXCLUDED_SUFFIXES) or (here == root and name in skip):
                continue
            full = here / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                digest.update(f"L\0{rel}\0{os.readlink(full)}\0".encode())
            elif stat.S_ISREG(st.st_mode):
                digest.update(f"F\0{rel}\0{int(bool(st.st_mode & stat.S_IXUSR))}\0".encode())
                digest.update(_file_sha256(full))
    return digest.hexdigest()


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def image_tag(
    *,
    dockerfile_text: str,
    dockerfile_path: str | None,
    context: str,
    generated: dict[str, bytes],
    build_args: dict[str, str],
) -> str:
    """The hash of the Dockerfile (which names the base image and the pip index settings),
    the build context, generated files and build args."""
    key = {
        "v": 1,
        "dockerfile": dockerfile_text,
        "dockerfile_path": dockerfile_path,
        "context": context,
        "generated": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(generated.items())},
        "build_args": dict(sorted(build_args.items())),
    }
    blob = json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:TAG_LENGTH]


def repository(job_name: str, registry: str | None) -> str:
    """``launchctl/<job>``, under ``<registry>/`` when there is one."""
    name = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:64].strip("-") or "job"
    repo = f"launchctl/{name}"
    if registry:
        host = re.sub(r"^[a-z]+://", "", registry.strip()).rstrip("/")
        repo = f"{host}/{repo}"
    return repo
