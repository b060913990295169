"""What the agent asks the builder for, what it gets back, and the one build error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from launchctl.errors import LaunchctlError

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_BASE_REFRESH_S = 12 * 3600.0  # builder.base_refresh's default (buildconfig.py)


@dataclass
class BuildRequest:
    """One image to make or find: a run's working copy plus the queue's builder settings."""

    job_name: str  # used in the image repository name
    source_dir: Path  # the run's working copy: the job's files (snapshot or git clone)
    entrypoint: list[str]  # e.g. ["python", "train.py"]; the generated image's ENTRYPOINT
    dockerfile: str | None = None  # the `dockerfile` override / -D, relative to the context
    # W&B's build context (job create -b): a folder of source_dir; a user Dockerfile (-D, the
    # job's Dockerfile, Dockerfile.wandb) is found in it and the build sends only it
    build_context: str | None = None
    base_image: str | None = None  # an accelerator base image (builder.accelerator.base_image)
    default_base_image: str = DEFAULT_BASE_IMAGE  # base for ordinary code and git jobs
    registry: str | None = None  # e.g. "localhost:5000": push there and run by that name
    index_url: str | None = None  # pip index for every build (air-gapped labs)
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    template_dir: Path | None = None  # user template folder, searched before the packaged one
    # The network of RUN steps: None is the engine's default bridge, so a member's Dockerfile
    # cannot reach services on the host's loopback; "host" only where a queue admin (or the
    # agent's config) says builder.network: host, for a lab whose package index is on loopback.
    network: str | None = None
    # docker-py auth_config ({"username": ..., "password": ...}) for the registry; None: the
    # engine client's own credentials (~/.docker/config.json, from `docker login`)
    registry_auth: dict[str, str] | None = field(default=None, repr=False)
    # The launchctl.home label of a built image (images/tag.py's home_label); None: that of
    # $LAUNCHCTL_HOME, the home the agent serves. `images prune` removes only its home's.
    home_label: str | None = None
    # How long a base image's registry digest is trusted before it is asked again
    # (builder.base_refresh, in seconds: 0 always, inf never; issue 20). A base this engine
    # built itself has no registry and is never asked: its local image ID is its identity.
    base_refresh_s: float = DEFAULT_BASE_REFRESH_S


@dataclass
class BuiltImage:
    """The image a run will use, and whether this call had to build or push it."""

    uri: str  # the image the run will use (the registry name when pushed): ${image_uri}
    tag: str  # the content hash part of the uri
    built: bool  # False when it already existed locally or in the registry
    pushed: bool
    dockerfile_source: str  # which Dockerfile: override, job Dockerfile, Dockerfile.wandb, template
    # The base images it was built on, each "NAME DIGEST" (or "NAME ID (local image)")
    bases: tuple[str, ...] = ()
    # What could not be checked (a registry not reachable): said in the run's events too
    warnings: tuple[str, ...] = ()


class BuildError(LaunchctlError):
    """An image could not be made. The message says in one line what failed and why (the
    step, pip's error lines, a way out); ``log_tail`` keeps the build log's lines that show
    it, for a caller that wants them; the whole output is in the build log."""

    stage = "build"

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.reason = message
        self.log_tail = log_tail
        super().__init__(message.rstrip("\n"))
