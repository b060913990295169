"""The Docker engine as the builder uses it: docker-py to find and push images, the docker
CLI to build with BuildKit (docker-py's build uses the classic builder: no RUN --mount)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from launchctl.images.model import BuildError
from launchctl.images.progress import StepReader, seconds

if TYPE_CHECKING:
    import docker

FALLBACK_CLIENT = "/usr/bin/docker"  # Debian's docker.io client: BuildKit without buildx


def connect() -> docker.DockerClient:
    """A docker-py client for the engine that DOCKER_HOST (or the default socket) names."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise BuildError(
            f"the Docker engine is not reachable ({exc}); start dockerd, or point DOCKER_HOST"
            " at a running engine"
        ) from None
    return client


@dataclass(frozen=True)
class BuildCli:
    """How to start a BuildKit build from the command line on this machine."""

    argv: tuple[str, ...]  # e.g. ("docker", "buildx", "build", "--load")
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env)
        return f"{env} {' '.join(self.argv)}".strip()


@functools.lru_cache(maxsize=1)
def build_cli() -> BuildCli:
    """Find a docker client that builds with BuildKit, once per process.

    ``docker buildx build --load`` where buildx works; else ``DOCKER_BUILDKIT=1 docker build``
    with a client that still has the built-in BuildKit builder: newer clients without the
    buildx plugin refuse it, so ``/usr/bin/docker`` is tried after the first on PATH.
    """
    candidates = list(dict.fromkeys(c for c in (shutil.which("docker"), FALLBACK_CLIENT) if c))
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    if not candidates:
        raise BuildError(
            "the Docker engine is not reachable: no docker command-line client here (looked on"
            f" PATH and at {FALLBACK_CLIENT}); building images needs it"
        )
    for client in candidates:
        if _works([client, "buildx", "version"]):
            return BuildCli(argv=(client, "buildx", "build", "--load"))
    for client in candidates:
        if _works([client, "build", "--help"], {"DOCKER_BUILDKIT": "1"}):
            return BuildCli(argv=(client, "build"), env=(("DOCKER_BUILDKIT", "1"),))
    raise BuildError(
        f"no docker client here can build with BuildKit (tried {', '.join(candidates)}):"
        " install the buildx plugin, or a docker client with built-in BuildKit"
    )


def _works(argv: list[str], env: dict[str, str] | None = None) -> bool:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=20,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_build(
    *,
    context: Path,
    dockerfile: Path,
    uri: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    network: str | None,
    log: Callable[[bytes], object],
    say: Callable[[str], object] | None = None,
    base_images: list[str] | None = None,
    secrets: dict[str, Path] | None = None,
) -> None:
    """Build ``uri`` with BuildKit, streaming its plain progress output to ``log`` as it comes,
    and one line per step (``build step 5/7: RUN ...``, ``... done in 8.2s``) to ``say``.
    Raises BuildError whose message says which step failed and why in one line (pip's own
    error lines, a hint when pip or the engine could not reach the network), and whose
    ``log_tail`` holds the lines that show it.

    ``secrets``: BuildKit secrets by id, each a file that a ``RUN --mount=type=secret`` step
    reads; they never reach the image, its history or the log. ``base_images``: the
    Dockerfile's FROM images, named in the hint when the machine cannot reach a registry."""
    import select

    cli = build_cli()
    argv: list[str] = [*cli.argv, "--progress", "plain", "-f", str(dockerfile), "-t", uri]
    for key, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    if network:
        argv += ["--network", network]
    for key, path in sorted((secrets or {}).items()):
        argv += ["--secret", f"id={key},src={path}"]
    argv.append(str(context))
    steps = StepReader(say)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **dict(cli.env)},
        )
    except OSError as exc:
        raise BuildError(f"cannot start {cli.describe()}: {exc}") from None
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 2.0)
            if not ready:
                steps.tick()  # a long quiet step still says it runs
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            log(chunk)
            steps.feed(chunk)
        steps.close()
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted while streaming: do not leave the build running
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if code != 0:
        why = steps.failure(base_images)
        if why.offline:
            message = f"image build of {uri} failed: {why.hint} ({why.error})"
        else:
            message = f"image build of {uri} failed{why.where}: {why.error}"
            if why.hint:
                message += f"; {why.hint}"
        raise BuildError(message, why.lines)
    if say is not None:
        cached = f", {steps.steps_cached} cached" if steps.steps_cached else ""
        total = steps.steps_done + steps.steps_cached
        say(f"launchctl: built {uri} in {seconds(steps.elapsed())} ({total} steps{cached})")


def to_stderr(chunk: bytes) -> None:
    out = getattr(sys.stderr, "buffer", None)
    if out is not None:
        out.write(chunk)
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()


def find(
    client: docker.DockerClient, uri: str, *, registry: bool, auth: dict[str, str] | None = None
) -> Literal["local", "registry"] | None:
    """Where ``uri`` already exists: this engine's images first, then (when pushed) the registry."""
    if exists_locally(client, uri):
        return "local"
    if registry and exists_in_registry(client, uri, auth):
        return "registry"
    return None


def exists_locally(client: docker.DockerClient, uri: str) -> bool:
    import docker

    try:
        client.images.get(uri)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise BuildError(f"cannot look up image {uri}: {exc}") from None
    return True


def mark_used(client: docker.DockerClient, uri: str, home: str) -> None:
    """Note that the launchctl home ``home`` (its ``home_label``) uses the local image
    ``uri`` that another home built: a second name, ``REPO:TAG.home-HOME``, so that the
    home that built it does not prune it while this one may need it (issue 12, item 6).
    Best effort: an image gone meanwhile is built again by the run that needs it."""
    import docker

    from launchctl.images.tag import HOME_LABEL, home_tag

    try:
        image = client.images.get(uri)
        built_by = (image.labels or {}).get(HOME_LABEL)
        if built_by and built_by != home:  # an image without the label is never pruned
            repo, tag = split_uri(uri)
            image.tag(repo, home_tag(tag, home))
    except docker.errors.DockerException:
        pass


def exists_in_registry(
    client: docker.DockerClient, uri: str, auth: dict[str, str] | None = None
) -> bool:
    """Asks the engine, which talks to the registry (with ``auth``, else its own credentials)."""
    import docker

    try:
        client.images.get_registry_data(uri, auth_config=auth or None)
    except docker.errors.APIError:
        return False  # not there, or the registry cannot be reached: building is the answer
    return True


def push(
    client: docker.DockerClient,
    uri: str,
    log: Callable[[bytes], object],
    auth: dict[str, str] | None = None,
) -> None:
    """Push ``uri``, writing the engine's status lines to ``log``; BuildError on failure.

    Credentials: ``auth`` when given, else the client's (``docker login``'s config.json).
    """
    import docker

    repo, tag = split_uri(uri)
    log(f"launchctl: pushing {uri}\n".encode())
    try:
        for item in client.images.push(
            repo, tag=tag, stream=True, decode=True, auth_config=auth or None
        ):
            if "error" in item:
                detail = item.get("errorDetail", {}).get("message") or item["error"]
                raise BuildError(f"push failed: {uri}: {detail}")
            if item.get("status") and not item.get("progressDetail"):
                prefix = f"{item['id']}: " if item.get("id") else ""
                log(f"{prefix}{item['status']}\n".encode())
    except docker.errors.APIError as exc:
        raise BuildError(f"push failed: {uri}: {exc.explanation or exc}") from None


def split_uri(uri: str) -> tuple[str, str]:
    """``host:5000/a/b:tag`` -> (``host:5000/a/b``, ``tag``)."""
    repo, sep, tag = uri.rpartition(":")
    if not sep or "/" in tag:
        return uri, "latest"
    return repo, tag
