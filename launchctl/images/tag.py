"""Image names: a content hash of everything that goes into the image, so equal inputs reuse it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from launchctl.jobfiles import Tree, open_nofollow, scan

TAG_LENGTH = 16
_CHUNK = 1 << 20

# The labels of every image launchctl builds (issue 12, item 6: `images list` / `prune`).
JOB_LABEL = "launchctl.job"  # the job's name
BUILD_LABEL = "launchctl.build"  # the content tag (the image name's tag)
HOME_LABEL = "launchctl.home"  # which launchctl home built it: ``home_label(root)``
# The base images it was built on (issue 20): JSON, [{"name", "id", "digest"?}, ...]
BASES_LABEL = "launchctl.bases"


def home_label(root: Path) -> str:
    """A short hash of a launchctl home's real path: the engine is shared by every home on
    the machine, and ``images prune`` removes only the images its own home built."""
    return hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:TAG_LENGTH]


def home_tag(tag: str, home: str) -> str:
    """The second name a home gives an image another home built when it reuses it."""
    return f"{tag}{HOME_TAG}{home}"


HOME_TAG = ".home-"  # REPO:TAG.home-HOME: see home_tag


def context_digest(root: Path | Tree, skip: frozenset[str] = frozenset()) -> str:
    """sha256 over each entry's path, executable bit and content (links: their target).

    The entries are what ``launchctl.jobfiles.scan`` keeps, in sorted order (no .git,
    caches, venvs, links leaving the job, FIFOs), less the root-level names in ``skip``
    (files the build generates): the digest is reproducible, and covers exactly the build
    context the builder lays out.
    """
    tree = root if isinstance(root, Tree) else scan(root, skip=skip)
    digest = hashlib.sha256()
    for kind, rel, extra in tree.entries():
        if kind == "L":
            digest.update(f"L\0{rel}\0{extra}\0".encode())
            continue
        digest.update(f"F\0{rel}\0{int(extra)}\0".encode())
        digest.update(_file_sha256(tree.root / rel))
    return digest.hexdigest()


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with os.fdopen(open_nofollow(path), "rb") as fh:
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
    index: list[str] | None = None,
    bases: dict[str, str] | None = None,
) -> str:
    """The hash of the Dockerfile (which names the base image and the pip index settings),
    the build context, generated files and build args; ``index``: the index settings that
    reach the build as a secret, without their credentials (a new password is no new
    image, a new index is); ``bases``: each base image's identity by name (images/base.py:
    its local image ID or registry digest), so that a base rebuilt under the same name is
    a new image (issue 20)."""
    key: dict[str, object] = {
        "v": 1,
        "dockerfile": dockerfile_text,
        "dockerfile_path": dockerfile_path,
        "context": context,
        "generated": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(generated.items())},
        "build_args": dict(sorted(build_args.items())),
    }
    if index:  # only then, so that every other tag stays what it was
        key["index"] = list(index)
    if bases is not None:
        key["bases"] = dict(sorted(bases.items()))
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
