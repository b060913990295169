"""The image builder: turn a run's working copy into an image, once per content.

``ensure_image`` picks the Dockerfile (W&B's precedence, else the packaged template), hashes
everything that affects the image into its tag, reuses an image that exists locally or in the
registry, and otherwise builds it with BuildKit and pushes it.
"""

from __future__ import annotations

from launchctl.images.builder import BuildPlan, ensure_image, plan_build
from launchctl.images.engine import build_cli
from launchctl.images.model import DEFAULT_BASE_IMAGE, BuildError, BuildRequest, BuiltImage

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "BuildError",
    "BuildPlan",
    "BuildRequest",
    "BuiltImage",
    "build_cli",
    "ensure_image",
    "plan_build",
]
