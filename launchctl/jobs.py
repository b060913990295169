"""Jobs: what to run. Code jobs are content-addressed snapshots kept in the store."""

from __future__ import annotations

import io
import os
import posixpath
import re
import shlex
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from launchctl import identity, paths
from launchctl.errors import LaunchctlError, NotFound, UsageError
from launchctl.jobfiles import EXCLUDED_DIRS, EXCLUDED_SUFFIXES
from launchctl.names import check_identifier
from launchctl.store import Row, Store, dumps

SOURCE_TYPES = ("code", "image", "git")
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
DEFAULT_PROJECT = "uncategorized"
DEFAULT_ENTRYPOINT = "main.py"  # W&B's job create, when -E is not given
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


class JobRef(NamedTuple):
    entity: str | None
    project: str | None
    name: str
    alias: str


def parse_job_ref(ref: str) -> JobRef:
    """W&B's job references: ``NAME``, ``ENTITY/NAME`` or ``ENTITY/PROJECT/NAME``, each
    with an optional ``:ALIAS`` (``latest``, the default, or ``vN``)."""
    head, slash, last = ref.rpartition("/")
    name, colon, alias = last.partition(":")
    scope = head.split("/") if slash else []
    if not name or (colon and not alias) or len(scope) > 2 or not all(scope):
        raise UsageError(
            f"invalid job {ref!r}: expected NAME, ENTITY/NAME or ENTITY/PROJECT/NAME,"
            " each with an optional :ALIAS"
        )
    entity = scope[0] if scope else None
    project = scope[1] if len(scope) == 2 else None
    return JobRef(entity, project, name, alias or "latest")


def version_ref(version: Row) -> str:
    """The reference that names one job version wherever it is used: ``ENTITY/NAME:vN``."""
    return f"{version['entity']}/{version['name']}:v{version['version']}"


def find_version(
    store: Store, ref: str, *, entity: str | None = None, prefer: str | None = None
) -> Row:
    """The job version ``ref`` names.

    A bare NAME is looked up in ``entity`` when one is given (and nowhere else); else in
    ``prefer`` when that entity has a job of that name; else it must be the only job of
    that name in the store.
    """
    parsed = parse_job_ref(ref)
    scope = parsed.entity or entity
    if scope is None and prefer is not None and prefer in store.jobs.entities_with(parsed.name):
        scope = prefer
    row = store.jobs.version(parsed.name, parsed.alias, entity=scope)
    if parsed.project is not None and row["project"] != parsed.project:
        raise NotFound(
            f"job '{row['entity']}/{row['name']}' is in project '{row['project']}',"
            f" not '{parsed.project}'"
        )
    return row


def listing(store: Store) -> list[Row]:
    """Every job with its ``latest`` version number, its count of ``versions``, its own
    ``aliases`` (alias -> ``vN``) and its latest version's ``description`` and
    ``metadata`` (build context, base image, runtime)."""
    rows = store.jobs.all()
    for row in rows:
        latest = store.jobs.version(str(row["name"]), "latest", entity=str(row["entity"]))
        row["aliases"] = store.jobs.aliases(int(row["id"]))
        row["description"] = latest.get("description")
        row["metadata"] = latest.get("metadata") or {}
        row["dockerfile"] = latest.get("dockerfile")
    return rows


def check_entrypoint_stays(entrypoint: list[str]) -> list[str]:
    """W&B's job create refuses an entry point that climbs out of the job (``..``)."""
    for arg in entrypoint:
        if ".." in PurePosixPath(arg.split("=", 1)[-1]).parts:
            raise UsageError(
                f"entry point {shlex.join(entrypoint)!r} climbs out of the job ('..'):"
                " name a file inside it"
            )
    return entrypoint


def show(store: Store, ref: str, *, prefer: str | None = None) -> tuple[Row, list[Row]]:
    """The job version ``ref`` names (see ``find_version``; a bare NAME is looked up in
    ``prefer``, default the user's own entity, first), and every version of its job,
    oldest first."""
    row = find_version(store, ref, prefer=prefer or identity.current_user())
    return row, store.jobs.versions(row["job_id"])


def check_author(
    store: Store,
    author: str | None,
    *,
    job: str,
    job_entity: str | None,
    run_entity: str | None,
    queue: Row | None,
) -> None:
    """Refuse a job version whose author is not a member of every entity the run acts for.

    Those are the job's own entity, the queue's entity (its config and secrets reach the
    run) and the run's entity (``-e``) when that names an entity of this store. Checked
    at launch and again by the agent when it claims the run, so a version row written by
    hand, or by someone who has since left the entity, does not run. A version with no
    recorded author (made before authors were recorded) is refused until a member of its
    entity publishes the same content again.
    """
    from launchctl.teams import PermissionDenied

    if author is None:
        raise PermissionDenied(
            f"job {job} has no recorded author (it was made before launchctl recorded"
            f" authors); a member of entity '{job_entity}' vouches for it by creating it"
            " again from the same source (`launchctl job create ...`)"
        )
    entities = [job_entity] if job_entity is not None else []
    if queue is not None:
        entities.append(str(queue["entity"]))
    if run_entity and store.teams.exists(run_entity):
        entities.append(run_entity)
    for entity in dict.fromkeys(entities):
        if store.teams.role(entity, author) is None:
            raise PermissionDenied(
                f"job {job} was written by '{author}', who is not a member of entity"
                f" '{entity}': a run uses only job versions written by members of its"
                " entities"
            )


def check_version_author(
    store: Store, version: Row, *, run_entity: str | None, queue: Row | None
) -> None:
    """``check_author`` for a stored job version."""
    check_author(
        store,
        version.get("author"),
        job=version_ref(version),
        job_entity=str(version["entity"]),
        run_entity=run_entity,
        queue=queue,
    )


def _owner(store: Store, entity: str | None) -> str:
    """The entity a job goes to: the one named, else the user's own (made if missing)."""
    from launchctl import teams

    if not entity or entity == identity.current_user():
        return teams.ensure_personal(store)
    return entity


def _members_only(store: Store, entity: str, user: str) -> Callable[[Row | None], object]:
    """Only members of ``entity`` create its jobs and add versions to them."""
    from launchctl import teams

    def authorize(job: Row | None) -> object:
        action = "create jobs in" if job is None else "add versions to the jobs of"
        return teams.require_member(store, entity, user, action=action)

    return authorize


def _add_version(store: Store, *, entity: str | None, **fields: Any) -> tuple[Row, bool]:
    """Record a version written by the current user, in ``entity`` (default: their own)."""
    owner = _owner(store, entity)
    user = identity.current_user()
    return store.jobs.add_version(
        entity=owner, author=user, authorize=_members_only(store, owner, user), **fields
    )


def _job_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "job"
    return name[:64]


def image_job_name(image: str) -> tuple[str, str | None]:
    """W&B's name for an image job (its job builder): ``job-`` and the image without its
    tag, made artifact-safe; the tag becomes an alias of the version. A tag that is a
    launchctl version name (``latest``, ``vN``) is no extra alias; a name is cut to 64
    characters (W&B keeps 128)."""
    raw, tag = image, None
    if ":" in image:
        last = image.rsplit(":", 1)[-1]
        if re.fullmatch(r"[a-zA-Z0-9_\-.]+", last):
            raw, tag = image.replace(f":{last}", ""), last
    name = re.sub(r"[^a-zA-Z0-9_\-.]", "_", f"job-{raw}")[:64]
    if tag is not None and (tag == "latest" or re.fullmatch(r"v\d+", tag)):
        tag = None
    return name, tag


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


def snapshot_directory(
    path: Path, special: list[dict[str, str]] | None = None
) -> tuple[str, bytes, int]:
    """Pack a directory into a reproducible tar.gz. Returns (digest, data, entry count).

    The digest covers each file's path, executable bit and content (a link: its target), so
    the same content always gives the same digest, wherever and whenever it is packed.
    Files are read with O_NOFOLLOW; a link is kept only when it stays inside the job (its
    target rewritten relative to it); a link leaving the job, a dangling link, a FIFO, a
    socket or a device is left out, and appended to ``special`` (see launchctl.jobfiles).
    """
    from launchctl import jobfiles

    refused = jobfiles.check_not_store(path)
    if refused is not None:
        raise LaunchctlError(refused)
    tree = jobfiles.scan(path, excluded_dirs=EXCLUDED_DIRS, excluded_suffixes=EXCLUDED_SUFFIXES)
    if special is not None:
        special.extend(s.as_dict() for s in tree.special)
    import hashlib  # here, not at the top: an agent imports this module, and never hashes

    digest = hashlib.sha256()
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for kind, rel, extra in tree.entries():
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if kind == "L":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
                info.mode = 0o777
                tar.addfile(info)
                digest.update(f"L\0{rel}\0{extra}\0".encode())
                continue
            try:
                data = jobfiles.read_under(path, rel)
            except OSError as exc:
                raise LaunchctlError(
                    f"{path}: {jobfiles.shown(rel)} changed while it was read"
                    f" ({exc.strerror or exc}): nothing was made; try again"
                ) from None
            total += len(data)
            if total > MAX_SNAPSHOT_BYTES:
                raise LaunchctlError(
                    f"{path} holds over {MAX_SNAPSHOT_BYTES >> 20} MiB of files; keep data"
                    " out of the code directory or use an image job"
                )
            info.mode = 0o755 if extra else 0o644
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            digest.update(f"F\0{rel}\0{int(extra)}\0".encode())
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest(), buf.getvalue(), len(tree)


def extract_snapshot(data: bytes, dest: Path) -> list[str]:
    """Unpack a snapshot into ``dest`` without writing or linking outside it; returns a
    line for each member left out (see launchctl.jobfiles.extract)."""
    from launchctl import jobfiles

    return jobfiles.extract(data, dest)


def _check_entrypoint_in(
    entrypoint: list[str], root: Path, files: set[str], context: str | None = None
) -> None:
    script = None
    if len(entrypoint) >= 2 and _PY.match(Path(entrypoint[0]).name):
        script = entrypoint[1]
    elif len(entrypoint) == 1 and "/" not in entrypoint[0]:
        script = entrypoint[0]  # `main.py` alone (W&B's default when -E is not given)
    if script is not None and (
        script.endswith(".py")
        and not script.startswith("-")
        and _in_context(context, script) not in files
    ):
        where = f" (relative to the build context {context})" if context else ""
        raise LaunchctlError(f"entry point file {script} not found in {root}{where}")


def _version_key(*parts: Any) -> str:
    import hashlib

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
    build_context: str | None = None,
    base_image: str | None = None,
    runtime: str | None = None,
    description: str | None = None,
    aliases: list[str] | tuple[str, ...] | None = None,
    keep_job_entrypoint: bool = False,
) -> tuple[Row, bool]:
    """A code job: ``path`` snapshotted into the store.

    As W&B's ``job create code``: ``build_context`` is a folder of the job (relative to its
    root) that images are built from; ``dockerfile`` and the entry point's script are
    relative to it. ``base_image`` replaces the builder's default base image, ``runtime``
    (``3.N``) is the Python version the job wants; ``aliases`` name this version beside
    ``latest`` and ``vN``.

    ``keep_job_entrypoint`` (a ``launch -u DIR -E CMD``): an existing job keeps its entry
    point, and ``entrypoint`` is the run's alone (see ``_kept_entrypoint``).
    """
    root = paths.user_path(path)
    if not _is_dir(root):
        raise LaunchctlError(f"code directory {path} does not exist or is not a directory")
    if not entrypoint:
        raise UsageError("a code job needs an entry point: pass -E, e.g. -E 'python train.py'")
    meta = _metadata(build_context=build_context, base_image=base_image, runtime=runtime)
    dockerfile = _check_dockerfile_path(dockerfile)
    aliases = _check_aliases(aliases)
    root = root.resolve()
    special: list[dict[str, str]] = []  # links and FIFOs, and what became of each
    digest, data, count = snapshot_directory(root, special)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = set(tar.getnames())
        dirs = {m.name for m in tar.getmembers() if m.isdir()}
    context = meta.get("build_context")
    if (
        context is not None
        and context not in dirs
        and not any(n.startswith(context + "/") for n in names)
    ):
        raise LaunchctlError(f"build context {context} is not a folder of {root}")
    _check_entrypoint_in(entrypoint, root, names, context)
    if dockerfile and _in_context(context, dockerfile) not in names:
        where = f" (relative to the build context {context})" if context else ""
        raise LaunchctlError(f"dockerfile {dockerfile} not found in {root}{where}")
    job_name = check_job_name(name) if name else _job_name(root.name)
    if keep_job_entrypoint:
        entrypoint = _kept_entrypoint(
            store,
            entity,
            job_name,
            entrypoint,
            kind="code",
            same=lambda v: (
                v["source"].get("snapshot") == digest
                and v["dockerfile"] == dockerfile
                and (v.get("metadata") or {}) == meta
            ),
            fits=lambda ep: _fits(ep, root, names, context),
        )
    return _add_version(
        store,
        name=job_name,
        snapshot=(digest, data, count),
        source_type="code",
        entity=entity,
        project=project or DEFAULT_PROJECT,
        digest=_version_key("code", digest, entrypoint, dockerfile, *_meta_key(meta)),
        source={"snapshot": digest, "path": str(root), "files": count}
        | ({"special": special} if special else {}),
        entrypoint=entrypoint,
        dockerfile=dockerfile,
        description=description,
        metadata=meta,
        aliases=aliases,
    )


def create_image_job(
    store: Store,
    image: str,
    *,
    entrypoint: list[str],
    name: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    description: str | None = None,
    aliases: list[str] | tuple[str, ...] | None = None,
) -> tuple[Row, bool]:
    if not image or any(c.isspace() for c in image):
        raise UsageError(f"invalid image name {image!r}")
    aliases = _check_aliases(aliases)
    default, tag = image_job_name(image)
    if tag is not None and tag not in aliases:
        aliases.append(tag)
    return _add_version(
        store,
        name=check_job_name(name) if name else default,
        source_type="image",
        entity=entity,
        project=project or DEFAULT_PROJECT,
        digest=_version_key("image", image, entrypoint),
        source={"image": image},
        entrypoint=entrypoint,
        dockerfile=None,
        description=description,
        aliases=aliases,
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
    build_context: str | None = None,
    base_image: str | None = None,
    runtime: str | None = None,
    description: str | None = None,
    aliases: list[str] | tuple[str, ...] | None = None,
    keep_job_entrypoint: bool = False,
) -> tuple[Row, bool]:
    """A git job: ``remote`` cloned at run time, at ``commit`` (W&B's ``-g/--git-hash``, or
    ``launch -g/--git-version``: a commit, branch or tag; default the remote's HEAD).
    ``build_context``, ``dockerfile``, ``base_image``, ``runtime`` as for a code job."""
    if not entrypoint:
        raise UsageError("a git job needs an entry point: pass -E, e.g. -E 'python train.py'")
    check_git_remote(remote, UsageError)
    _check_git_source(remote)
    check_git_commit(commit, UsageError)
    meta = _metadata(build_context=build_context, base_image=base_image, runtime=runtime)
    dockerfile = _check_dockerfile_path(dockerfile)
    aliases = _check_aliases(aliases)
    base = remote.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    job_name = check_job_name(name) if name else _job_name(base)
    if keep_job_entrypoint:
        git = {"remote": remote, "commit": commit}
        entrypoint = _kept_entrypoint(
            store,
            entity,
            job_name,
            entrypoint,
            kind="git",
            same=lambda v: (
                v["source"].get("git") == git
                and v["dockerfile"] == dockerfile
                and (v.get("metadata") or {}) == meta
            ),
            fits=lambda _ep: True,  # the code is cloned at run time: nothing to check here
        )
    return _add_version(
        store,
        name=job_name,
        source_type="git",
        entity=entity,
        project=project or DEFAULT_PROJECT,
        digest=_version_key("git", remote, commit, entrypoint, dockerfile, *_meta_key(meta)),
        source={"git": {"remote": remote, "commit": commit}},
        entrypoint=entrypoint,
        dockerfile=dockerfile,
        description=description,
        metadata=meta,
        aliases=aliases,
    )


_META_KEYS = ("build_context", "base_image", "runtime")


def _fits(entrypoint: list[str], root: Path, files: set[str], context: str | None) -> bool:
    try:
        _check_entrypoint_in(entrypoint, root, files, context)
    except LaunchctlError:
        return False
    return True


def _kept_entrypoint(
    store: Store,
    entity: str | None,
    name: str,
    given: list[str],
    *,
    kind: str,
    same: Callable[[Row], bool],
    fits: Callable[[list[str]], bool],
) -> list[str]:
    """The entry point the version a ``launch -u ... -E CMD`` uses records (issue 12).

    A new job takes CMD, as W&B's ``wandb launch -u`` makes it. An existing job keeps
    what ``-j NAME`` means: CMD is the run's entry point (its ``overrides.entry_point``),
    not a change of the job's. So the launch uses the newest version with the same code
    (and Dockerfile, build context, base image, runtime), whatever its entry point, and
    makes no version for a changed entry point alone; code that changed makes a new
    version with the job's current entry point, or CMD where that one is not in the new
    code (a job whose script was renamed)."""
    owner = entity or identity.current_user()
    try:
        latest = store.jobs.version(name, "latest", entity=owner)
    except NotFound:
        return given
    if latest["source_type"] != kind:
        return given  # refused when it is written, with the reason
    if same(latest):
        return list(latest["entrypoint"])
    for version in reversed(store.jobs.versions(int(latest["job_id"]))):
        if same(version):
            return list(version["entrypoint"])
    kept = list(latest["entrypoint"])
    return kept if kept and fits(kept) else given


_CHANGES = (
    ("code", lambda v: {k: x for k, x in v["source"].items() if k not in ("path", "files")}),
    ("entry point", lambda v: v["entrypoint"]),
    ("dockerfile", lambda v: v["dockerfile"]),
    ("build context", lambda v: (v.get("metadata") or {}).get("build_context")),
    ("base image", lambda v: (v.get("metadata") or {}).get("base_image")),
    ("runtime", lambda v: (v.get("metadata") or {}).get("runtime")),
)


def new_version_line(store: Store, version: Row) -> str | None:
    """``job NAME: new version vN (entry point changed)`` for a version just made of a job
    that had one before (None for a job's only version): what differs from the version
    that was ``latest`` until now."""
    number = int(version["version"])
    older = [v for v in store.jobs.versions(int(version["job_id"])) if v["version"] < number]
    if not older:
        return None
    before = older[-1]  # the newest one before it (a deleted version leaves a gap)
    changed = [what for what, part in _CHANGES if part(before) != part(version)]
    if version["source_type"] == "image" and "code" in changed:
        changed[changed.index("code")] = "image"
    listed = " and ".join([", ".join(changed[:-1]), changed[-1]] if len(changed) > 1 else changed)
    why = f" ({listed} changed)" if changed else ""
    return f"job {version['name']}: new version v{number}{why}"


def _meta_key(meta: dict[str, Any]) -> list[Any]:
    """What of a version's metadata makes it a different version (none: the old digest)."""
    return [meta] if meta else []


def _metadata(
    *, build_context: str | None, base_image: str | None, runtime: str | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if build_context is not None:
        meta["build_context"] = check_build_context(build_context)
    if base_image is not None:
        meta["base_image"] = check_base_image(base_image)
    if runtime is not None:
        meta["runtime"] = check_runtime(runtime)
    return meta


def _in_context(context: str | None, rel: str) -> str:
    """``rel`` (relative to the build context) as a path from the job's root."""
    joined = PurePosixPath(context or ".", rel).as_posix()
    return posixpath.normpath(joined)


def _relative_path(value: str, what: str) -> str | None:
    """A path inside the job, normalised (``./a/`` -> ``a``, ``.`` -> None); refused when it
    is absolute or climbs out with ``..``."""
    if not value.strip() or "\0" in value or any(ord(c) < 32 for c in value):
        raise UsageError(f"invalid {what} {value!r}")
    if value.startswith("/"):
        raise UsageError(f"{what} {value} must be a path relative to the job's root")
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../") or ".." in PurePosixPath(value).parts:
        raise UsageError(f"{what} {value} climbs out of the job ('..')")
    return None if norm == "." else norm


def check_build_context(value: str) -> str | None:
    """W&B's ``-b/--build-context``: a folder of the job, relative to its root."""
    return _relative_path(value, "build context")


def _check_dockerfile_path(value: str | None) -> str | None:
    if value is None:
        return None
    rel = _relative_path(value, "dockerfile")
    if rel is None:
        raise UsageError(f"dockerfile {value!r} names a folder, not a file")
    return rel


def check_runtime(value: str) -> str:
    """W&B's ``-r/--runtime``: a minor version of Python 3 (``3.10``)."""
    if not re.fullmatch(r"3\.\d+", value):
        raise UsageError(
            "runtime (-r, --runtime) must be a minor version of Python 3, e.g. 3.10 or"
            f" 3.11, received {value!r}"
        )
    return value


def check_base_image(value: str) -> str:
    """W&B's ``-B/--base-image``: an image reference by Docker's grammar (it becomes a FROM)."""
    from launchctl import imageref

    return imageref.check_image_ref(value, "base image (-B, --base-image)")


def _check_aliases(aliases: list[str] | tuple[str, ...] | None) -> list[str]:
    """W&B's ``-a/--alias``: names beside ``latest`` and ``vN`` (which stay launchctl's)."""
    out = []
    for alias in aliases or ():
        if not alias or not re.fullmatch(r"[A-Za-z0-9_.-]+", alias):
            raise UsageError(f"invalid alias {alias!r}: letters, digits, '-', '_' and '.' only")
        if alias == "latest" or re.fullmatch(r"v\d+", alias):
            if alias == "latest":
                continue  # W&B adds latest itself; it always names the newest version
            raise UsageError(f"alias {alias!r} is a version name: pick another alias")
        out.append(alias)
    return out


def check_git_remote(remote: str, error: type[Exception]) -> str:
    """A git URL that git could read as an option (``--upload-pack=...``) is refused."""
    if not remote.strip():
        raise error("a git job needs a repository URL")
    if remote.startswith("-"):
        raise error(f"invalid git URL {remote!r}: it starts with '-'")
    if any(ord(c) < 32 or ord(c) == 127 for c in remote):
        raise error(f"invalid git URL {remote!r}: it holds control characters")
    return remote


_GIT_URL = re.compile(
    r"^(https?|ssh|git|git\+ssh|ssh\+git)://[^\s/]+/\S*$|^([\w.-]+@)?[\w.-]+:(?!//)\S+$"
)


def _check_git_source(remote: str) -> None:
    """At job create: a URL git can clone (a scheme and a host, or scp's user@host:path),
    or a repository on this machine (a path, or file://): something else ('not a url', a
    path that is not there) would be stored, and fail every run at its clone."""
    if _GIT_URL.match(remote):
        return
    local = remote.removeprefix("file://")
    if os.path.isdir(os.path.expanduser(local)):
        return
    raise UsageError(
        f"{remote!r} is not a git URL (https://, ssh://, git://, user@host:path) nor a"
        " repository folder on this machine"
    )


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
    """W&B's rule for job (artifact) names first, with its suggestion; then launchctl's
    identifier rule (a leading letter or digit, at most 64 characters)."""
    safe = re.sub(r"[^a-zA-Z0-9_\-.]", "_", name)
    if name and safe != name:
        raise UsageError(
            f"invalid job name {name!r}: job names may only contain alphanumeric characters,"
            f" dashes, underscores and dots; did you mean {safe!r}?"
        )
    return check_identifier(name, "job")
