"""Fixtures for the sync tests: ``wandb_server``, a fresh stand-in W&B server per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync.standin import WandbStandIn


@pytest.fixture
def wandb_server() -> Iterator[WandbStandIn]:
    """A stand-in W&B server on a free loopback port, empty, with one user ("standin")
    whose key is ``.api_key``; ``.env()`` gives WANDB_BASE_URL and WANDB_API_KEY."""
    server = WandbStandIn().start()
    try:
        yield server
    finally:
        server.stop()


def wandb_client_env(server: WandbStandIn, workdir: Path) -> dict[str, str]:
    """The environment for W&B's own client (``wandb sync``, a script calling
    ``wandb.init``) aimed at ``server`` and nothing else: no git probing, no code saving,
    no system metrics, W&B's files under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        **server.env(),
        "WANDB_DIR": str(workdir),
        "WANDB_CONFIG_DIR": str(workdir / ".config"),
        "WANDB_CACHE_DIR": str(workdir / ".cache"),
        "WANDB_DATA_DIR": str(workdir / ".data"),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_MACHINE_INFO": "true",
        "WANDB_ERROR_REPORTING": "false",
    }
