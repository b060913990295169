"""What a build starts FROM, by content: the identity of each base image (issue 20).

A job image's content tag hashes its base images' identities, not only their names, so a
base rebuilt in place under the same name (``lab/base:1``) gives a new tag and a rebuild,
and the same base content gives the same tag:

- a base this engine has: its local image ID (content-addressed: the same content, the same
  ID). A base that came from a registry (it has a repository digest) is first checked
  against its registry with a manifest request (no pull) when ``builder.base_refresh`` says
  it is due; a new digest there is pulled, and the build log says the base changed;
- a base this engine lacks: its registry digest, from a manifest request (BuildKit pulls it
  during the build);
- a base pinned by digest (``name@sha256:...``): that digest, never looked up;
- a base that cannot be checked (the registry unreachable): the local copy, and the run's
  events say so; with no local copy, its name alone (the build then says why it failed).

When a registry was last asked about each base is kept in ``base-checks.json`` in the
launchctl home (a cache: losing it costs one more manifest request).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

CHECKS_FILE = "base-checks.json"
UNRESOLVED = "unresolved"  # the identity of a base neither here nor reachable: its name only


@dataclass(frozen=True)
class Base:
    """One base image as a build uses it."""

    name: str  # as the Dockerfile (or the builder's settings) names it
    identity: str  # what the tag hashes: the local image ID, the registry digest, or UNRESOLVED
    image_id: str | None = None  # this engine's image ID, when it has the image
    digest: str | None = None  # the registry (manifest) digest, when known

    def shown(self) -> str:
        """``lab/base:1 sha256:...`` (the digest when known, else the local image ID)."""
        if self.digest:
            return f"{self.name} {self.digest}"
        if self.image_id:
            return f"{self.name} {self.image_id} (local image)"
        return f"{self.name} (not checked)"

    def label(self) -> dict[str, str]:
        out = {"name": self.name, "id": self.identity}
        if self.digest:
            out["digest"] = self.digest
        return out


@dataclass
class Resolved:
    """The bases of one build, and what to say about them."""

    bases: list[Base] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # lines for the build log
    warnings: list[str] = field(default_factory=list)  # for the run's events as well

    def identities(self) -> dict[str, str]:
        return {b.name: b.identity for b in self.bases}


def repository(name: str) -> str:
    """``host:5000/a/b:tag@sha256:..`` -> ``host:5000/a/b``; Docker Hub's familiar form."""
    repo = name.partition("@")[0]
    head, sep, tail = repo.rpartition(":")
    if sep and "/" not in tail:
        repo = head
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
    return repo.removeprefix("library/")


def repo_digest(attrs: dict[str, Any], name: str) -> str | None:
    """The digest this engine recorded for ``name``'s repository (a pull or a push), if any."""
    want = repository(name)
    for entry in attrs.get("RepoDigests") or []:
        repo, _, digest = str(entry).partition("@")
        if repository(repo) == want and digest:
            return digest
    return None


class Checks:
    """When each base was last checked against its registry, in ``base-checks.json``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        self.changed = False
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.data = {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def fresh(self, name: str, refresh_s: float, now: float) -> dict[str, Any] | None:
        """The last check of ``name`` when it is younger than ``refresh_s``."""
        entry = self.data.get(name)
        if entry is None or not isinstance(entry.get("at"), int | float):
            return None
        return entry if now - float(entry["at"]) < refresh_s else None

    def record(self, name: str, digest: str, now: float) -> None:
        self.data[name] = {"at": now, "digest": digest}
        self.changed = True

    def save(self) -> None:
        """Written whole to a new file, then renamed over the old: never half a file."""
        if self.path is None or not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".base-checks-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(self.data, fh, sort_keys=True)
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _local(client: docker.DockerClient, name: str) -> Any | None:
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError:
        return None


def _registry_digest(
    client: docker.DockerClient, name: str, auth: dict[str, str] | None
) -> tuple[str | None, str]:
    """(digest, "") from a manifest request through the engine, or (None, why not)."""
    import docker

    try:
        data = client.images.get_registry_data(name, auth_config=auth or None)
    except docker.errors.DockerException as exc:
        why = getattr(exc, "explanation", None) or str(exc)
        return None, " ".join(str(why).split())[:300]
    except Exception as exc:  # a transport error: the registry is not reachable
        return None, " ".join(str(exc).split())[:300] or type(exc).__name__
    return str(data.id), ""


def _pull(
    client: docker.DockerClient, name: str, auth: dict[str, str] | None
) -> tuple[Any | None, str]:
    """Pull ``name``; (the image, "") or (None, why not)."""
    import docker

    repo, _, tag = name.partition("@")[0].rpartition(":")
    if not repo or "/" in tag:
        repo, tag = name.partition("@")[0], "latest"
    try:
        for item in client.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in item:
                return None, str(item["error"])
        return client.images.get(name), ""
    except docker.errors.DockerException as exc:
        return None, str(getattr(exc, "explanation", None) or exc)


def _short(digest: str | None) -> str:
    return digest or "?"


def resolve(
    client: docker.DockerClient,
    names: Iterable[str],
    *,
    refresh_s: float,
    checks_path: Path | None,
    auth_for: Callable[[str], dict[str, str] | None] = lambda name: None,
    now: Callable[[], float] = time.time,
) -> Resolved:
    """The identity of each base in ``names`` (see the module's docstring)."""
    out = Resolved()
    checks = Checks(checks_path if math.isfinite(refresh_s) else None)
    for name in names:
        out.bases.append(_resolve_one(client, name, refresh_s, checks, auth_for(name), now, out))
    checks.save()
    return out


def _resolve_one(
    client: docker.DockerClient,
    name: str,
    refresh_s: float,
    checks: Checks,
    auth: dict[str, str] | None,
    now: Callable[[], float],
    out: Resolved,
) -> Base:
    if "@" in name:  # pinned: the digest is the identity, whatever the engine holds
        digest = name.rpartition("@")[2]
        return Base(name, digest, digest=digest)
    image = _local(client, name)
    if image is not None:
        known = repo_digest(image.attrs, name)
        if known is None:  # built (or loaded) here: no registry to ask, its ID is the content
            return Base(name, image.id, image_id=image.id)
        if not math.isfinite(refresh_s) or checks.fresh(name, refresh_s, now()) is not None:
            return Base(name, image.id, image_id=image.id, digest=known)
        remote, why = _registry_digest(client, name, auth)
        if remote is None:
            out.warnings.append(
                f"base {name} could not be checked against its registry ({why}): the local"
                f" copy {image.id} is used"
            )
            return Base(name, image.id, image_id=image.id, digest=known)
        checks.record(name, remote, now())
        if remote == known:
            return Base(name, image.id, image_id=image.id, digest=known)
        out.log.append(f"base {name} changed in its registry: {known} -> {remote}; pulling it")
        pulled, why = _pull(client, name, auth)
        if pulled is None:
            out.warnings.append(
                f"base {name} has a new digest {remote} in its registry but could not be"
                f" pulled ({' '.join(why.split())[:300]}): the local copy {image.id} is used"
            )
            return Base(name, image.id, image_id=image.id, digest=known)
        return Base(name, pulled.id, image_id=pulled.id, digest=repo_digest(pulled.attrs, name))
    # Not here: the registry's digest names the content BuildKit will pull.
    cached = checks.fresh(name, refresh_s, now()) if math.isfinite(refresh_s) else None
    if cached is not None and isinstance(cached.get("digest"), str):
        return Base(name, cached["digest"], digest=cached["digest"])
    remote, why = _registry_digest(client, name, auth)
    if remote is None:
        last = checks.data.get(name) or {}
        if isinstance(last.get("digest"), str):  # offline: the digest it had when last seen
            out.warnings.append(
                f"base {name} could not be checked against its registry ({why}): the digest"
                f" it had when last checked, {last['digest']}, is used"
            )
            return Base(name, last["digest"], digest=last["digest"])
        out.warnings.append(
            f"base {name} could not be checked against its registry ({why}) and this engine"
            " has no copy of it"
        )
        return Base(name, UNRESOLVED)
    checks.record(name, remote, now())
    return Base(name, remote, digest=remote)


def local_identities(client: docker.DockerClient | None, names: Iterable[str]) -> list[Base]:
    """Each base as this engine has it, with no registry asked: the identity ``resolve``
    gives when nothing changed and no check is due (for ``plan_build``)."""
    out: list[Base] = []
    for name in names:
        if "@" in name:
            digest = name.rpartition("@")[2]
            out.append(Base(name, digest, digest=digest))
            continue
        image = _local(client, name) if client is not None else None
        if image is None:
            out.append(Base(name, UNRESOLVED))
        else:
            known = repo_digest(image.attrs, name)
            out.append(Base(name, image.id, image_id=image.id, digest=known))
    return out


def changes(previous: list[dict[str, Any]], bases: list[Base]) -> list[str]:
    """``base X changed: old -> new`` for each base whose identity differs from the one the
    job's previous image was built on (its ``launchctl.bases`` label)."""
    before = {str(b.get("name")): str(b.get("id")) for b in previous if isinstance(b, dict)}
    lines = []
    for base in bases:
        old = before.get(base.name)
        if old is not None and old != base.identity:
            lines.append(f"base {base.name} changed: {_short(old)} -> {_short(base.identity)}")
    return lines
