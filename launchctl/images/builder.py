"""Make or find the image of a code or git job: plan (Dockerfile + content tag), then build."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from launchctl import jobfiles, paths
from launchctl.images import base as bases
from launchctl.images import dockerfile as dockerfiles
from launchctl.images import engine
from launchctl.images.dockerfile import Dockerfile
from launchctl.images.model import BuildError, BuildRequest, BuiltImage
from launchctl.images.tag import (
    BASES_LABEL,
    BUILD_LABEL,
    HOME_LABEL,
    JOB_LABEL,
    context_digest,
    home_label,
    image_tag,
    repository,
)


@dataclass(frozen=True)
class BuildPlan:
    """What a build would do, worked out without the engine: the Dockerfile and the image name."""

    dockerfile: Dockerfile
    build_args: dict[str, str]
    uri: str
    tag: str
    tree: jobfiles.Tree  # the job's files that go into the build context
    bases: tuple[bases.Base, ...] = ()  # the images it builds FROM, with their identities


Resolver = Callable[[list[str]], list[bases.Base]]


def plan_build(req: BuildRequest, resolve: Resolver | None = None) -> BuildPlan:
    """Choose the Dockerfile and hash everything that affects the image into its tag.

    The tag hashes the identity of every image the Dockerfile builds FROM (each stage's, the
    template's base): ``resolve`` gives them (``ensure_image`` asks registries as
    ``builder.base_refresh`` says); without it, each is looked up on this engine alone
    (``base.local_identities``), which gives the tag ``ensure_image`` finds when no base
    changed."""
    if not req.source_dir.is_dir():
        raise BuildError(f"the job's files are missing: {req.source_dir} is not a folder")
    chosen = dockerfiles.choose(req)
    args = dict(req.build_args)
    secret_index = dockerfiles.has_index_credentials(req)
    if chosen.path is not None and not secret_index:
        # A user Dockerfile can take the index settings with `ARG PIP_INDEX_URL` and so on
        # (not when they hold credentials: build args stay in the image's history).
        args = {**_pip_build_args(req), **args}
    # What the build context will hold: links leaving the job, FIFOs and such are left out.
    # Every build sends only the build context (the job's root when it has none). W&B's
    # builder sends the whole job for its template, though its `job create -E` help says the
    # entry point is relative to the context: launchctl keeps that promise for both.
    root = dockerfiles.context_root(req)
    tree = jobfiles.scan(root, skip=frozenset(chosen.files))
    names = dockerfiles.from_images(chosen.text, args)
    found = resolve(names) if resolve is not None else _local_bases(names)
    tag = image_tag(
        dockerfile_text=chosen.text,
        dockerfile_path=chosen.path,
        context=context_digest(tree),
        generated=chosen.files,
        build_args=args,
        index=dockerfiles.redacted_index(req) if secret_index else None,
        bases={b.name: b.identity for b in found},
    )
    uri = f"{repository(req.job_name, req.registry)}:{tag}"
    return BuildPlan(
        dockerfile=chosen, build_args=args, uri=uri, tag=tag, tree=tree, bases=tuple(found)
    )


def _local_bases(names: list[str]) -> list[bases.Base]:
    try:
        client = engine.connect()
    except BuildError:
        return bases.local_identities(None, names)
    try:
        return bases.local_identities(client, names)
    finally:
        client.close()


def _base_auth(req: BuildRequest) -> Callable[[str], dict[str, str] | None]:
    """The queue's registry credentials for a base on that registry; else the engine's own."""
    from launchctl.images.tag import repository as job_repository

    host = job_repository("x", req.registry).rpartition("/launchctl/")[0] if req.registry else ""

    def auth(name: str) -> dict[str, str] | None:
        if host and req.registry_auth and name.startswith(f"{host}/"):
            return req.registry_auth
        return None

    return auth


def _pip_build_args(req: BuildRequest) -> dict[str, str]:
    args = {}
    if req.index_url:
        args["PIP_INDEX_URL"] = req.index_url
    if req.extra_index_urls:
        args["PIP_EXTRA_INDEX_URL"] = " ".join(req.extra_index_urls)
    if req.find_links:
        args["PIP_FIND_LINKS"] = " ".join(req.find_links)
    return args


Progress = bool | Callable[[str], object]


def ensure_image(
    req: BuildRequest,
    log: Callable[[bytes], object],
    *,
    progress: Progress = False,
    build_log: Callable[[bytes], object] | None = None,
) -> BuiltImage:
    """The image for ``req``: reused when its tag exists locally or in the registry, else
    built with BuildKit (and pushed when there is a registry).

    ``log`` gets launchctl's own lines; its first names the image and the Dockerfile. With
    ``build_log``, BuildKit's raw output (and the push's) goes there, and ``log`` gets one
    line per build step as it goes (``launchctl: build step 5/7: RUN ...``, ``... done in
    8.2s``); without it, the raw output goes to ``log`` too. ``progress``: the step lines
    also go to stderr (True) or to this callable. Credentials (an index URL's password, the
    registry's) are masked (``***``) in every output and in errors."""
    say = _stderr_line if progress is True else (progress or None)
    masks = _credentials(req)
    if not masks:
        return _ensure(req, log, build_log, say)
    from launchctl.masking import Masker

    maskers = [Masker(masks), Masker(masks)]

    def masking(masker: Masker, out: Callable[[bytes], object]) -> Callable[[bytes], object]:
        def masked(chunk: bytes) -> None:
            if data := masker.feed(chunk):
                out(data)

        return masked

    def masked_say(line: str) -> None:
        if say is not None:
            say(maskers[0].mask_text(line))

    try:
        return _ensure(
            req,
            masking(maskers[0], log),
            masking(maskers[1], build_log) if build_log is not None else None,
            masked_say if say is not None else None,
        )
    except BuildError as exc:
        raise BuildError(
            maskers[0].mask_text(exc.reason), maskers[0].mask_text(exc.log_tail)
        ) from None
    finally:
        if tail := maskers[0].flush():
            log(tail)
        if build_log is not None and (tail := maskers[1].flush()):
            build_log(tail)


def _stderr_line(line: str) -> None:
    engine.to_stderr(f"{line}\n".encode())


def _credentials(req: BuildRequest) -> list[str]:
    from launchctl.buildconfig import has_credentials, url_secrets

    urls = dockerfiles.index_urls(req)
    masks = [m for u in urls for m in url_secrets(u)] + [u for u in urls if has_credentials(u)]
    if req.registry_auth and req.registry_auth.get("password"):
        masks.append(req.registry_auth["password"])
    return list(dict.fromkeys(masks))


def _ensure(
    req: BuildRequest,
    log: Callable[[bytes], object],
    build_log: Callable[[bytes], object] | None,
    say: Callable[[str], object] | None,
) -> BuiltImage:
    client = engine.connect()
    resolved = bases.Resolved()

    def resolve(names: list[str]) -> list[bases.Base]:
        got = bases.resolve(
            client,
            names,
            refresh_s=req.base_refresh_s,
            checks_path=paths.home() / bases.CHECKS_FILE,
            auth_for=_base_auth(req),
        )
        resolved.log, resolved.warnings = got.log, got.warnings
        return got.bases

    try:
        plan = plan_build(req, resolve)
    except BaseException:
        client.close()
        raise
    shown = tuple(b.shown() for b in plan.bases)
    warnings = tuple(resolved.warnings)
    source = plan.dockerfile.source
    notes = [  # shown after the first line, which names the image
        *(f"launchctl: {line}\n".encode() for line in [*resolved.log, *resolved.warnings]),
        *(f"launchctl: job file {s.line()}\n".encode() for s in plan.tree.special),
    ]
    raw = build_log or log
    try:
        where = engine.find(
            client, plan.uri, registry=req.registry is not None, auth=req.registry_auth
        )
        if where == "local":  # another home's build: this home uses it too (images prune)
            engine.mark_used(client, plan.uri, req.home_label or home_label(paths.home()))
        if where is not None:
            note = f"launchctl: {plan.uri} exists {_WHERE[where]} ({source}): nothing to build\n"
            log(note.encode())
            for line in notes:
                log(line)
            pushed = False
            if (
                where == "local"
                and req.registry
                and not engine.exists_in_registry(client, plan.uri, req.registry_auth)
            ):
                _push(client, plan.uri, req, log, build_log)
                pushed = True
            return BuiltImage(
                plan.uri,
                plan.tag,
                built=False,
                pushed=pushed,
                dockerfile_source=source,
                bases=shown,
                warnings=warnings,
            )
        log(f"launchctl: building {plan.uri} with {source}\n".encode())
        for change in bases.changes(_previous_bases(client, req.job_name), list(plan.bases)):
            log(f"launchctl: {change}\n".encode())  # why this job is built again
        for line in notes:
            log(line)
        if build_log is not None:
            raw(f"launchctl: building {plan.uri} with {source}\n".encode())

        def step(line: str) -> None:
            if build_log is not None:  # the run's log shows the steps, not BuildKit's lines
                log(f"{line}\n".encode())
            if say is not None:
                say(line)

        try:
            _build(req, plan, raw, step)
        except BuildError as exc:
            if build_log is not None:  # the run's log ends with why, as the agent says it
                log(f"launchctl: {exc}\n".encode())
            raise
        if req.registry:
            _push(client, plan.uri, req, log, build_log)
        return BuiltImage(
            plan.uri,
            plan.tag,
            built=True,
            pushed=bool(req.registry),
            dockerfile_source=source,
            bases=shown,
            warnings=warnings,
        )
    finally:
        client.close()


def _previous_bases(client: object, job_name: str) -> list[dict[str, object]]:
    """The bases (``launchctl.bases`` label) of the newest image built for this job."""
    try:
        images = client.images.list(filters={"label": f"{JOB_LABEL}={job_name}"})  # type: ignore[attr-defined]
    except Exception:  # only for the build log's reason: best effort
        return []
    images = [i for i in images if BASES_LABEL in (i.labels or {})]
    if not images:
        return []
    newest = max(images, key=lambda i: str(i.attrs.get("Created") or ""))
    try:
        found = json.loads(newest.labels[BASES_LABEL])
    except ValueError:
        return []
    return found if isinstance(found, list) else []


def _push(
    client: object,
    uri: str,
    req: BuildRequest,
    log: Callable[[bytes], object],
    build_log: Callable[[bytes], object] | None,
) -> None:
    if build_log is not None:
        log(f"launchctl: pushing {uri}\n".encode())
    engine.push(client, uri, build_log or log, req.registry_auth)


_WHERE = {"local": "locally", "registry": "in the registry"}


def _build(
    req: BuildRequest,
    plan: BuildPlan,
    log: Callable[[bytes], object],
    say: Callable[[str], object],
) -> None:
    """Build from a context laid out afresh in a folder of the builder's own: the job's files
    copied without following a link, the generated files written new, so nothing in the
    job (a link to a host file named like a generated one, say) makes it write elsewhere."""
    chosen = plan.dockerfile
    with _scratch(req.source_dir) as tmp:
        context = tmp / "context"
        context.mkdir()
        jobfiles.copy_tree(plan.tree, context)
        for name, data in chosen.files.items():
            jobfiles.write_new(context / name, data)
        if chosen.path is not None:
            dockerfile = Path(os.path.realpath(context / chosen.path))
            if not dockerfile.is_relative_to(os.path.realpath(context)):
                raise BuildError(f"dockerfile {chosen.path} points outside the job's files")
        else:
            dockerfile = tmp / "Dockerfile"
            jobfiles.write_new(dockerfile, chosen.text.encode())
        secrets = {}
        if dockerfiles.has_index_credentials(req):
            secrets[dockerfiles.PIP_SECRET] = tmp / "pip.conf"
            jobfiles.write_new(tmp / "pip.conf", dockerfiles.pip_config(req).encode(), 0o600)
            if chosen.path is not None:
                log(
                    "launchctl: the package index settings hold credentials, so they are no"
                    " build args (docker history would keep them); the Dockerfile can mount"
                    f" them: RUN --mount=type=secret,id={dockerfiles.PIP_SECRET},"
                    "target=/etc/pip.conf pip install ...\n".encode()
                )
        engine.run_build(
            context=context,
            dockerfile=dockerfile,
            uri=plan.uri,
            build_args=plan.build_args,
            labels={
                JOB_LABEL: req.job_name,
                BUILD_LABEL: plan.tag,
                HOME_LABEL: req.home_label or home_label(paths.home()),
                BASES_LABEL: json.dumps([b.label() for b in plan.bases], sort_keys=True),
            },
            network=req.network,
            log=log,
            say=say,
            base_images=[b.name for b in plan.bases],
            secrets=secrets,
        )


@contextlib.contextmanager
def _scratch(source_dir: Path) -> Iterator[Path]:
    """A new private folder beside the working copy (the run's folder: the same disk, not a
    small /tmp), else in the temp folder; removed afterwards."""
    try:
        tmp = tempfile.mkdtemp(prefix=".launchctl-build-", dir=source_dir.parent)
    except OSError:
        tmp = tempfile.mkdtemp(prefix="launchctl-build-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
