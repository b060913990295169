"""Issue 12: `images list` / `images prune` (item 6) and an offline pull (item 4), driven
through the CLI against the real Docker engine with local base images only.

Each test builds images under job names of its own (``lcimg<random>``) and removes what
is left of them at the end: the engine is shared with other test sessions.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUSYBOX, PYTHON_IMAGE, cli, cli_json, make_script


def _queue(name: str = "build") -> None:
    config = {"builder": {"base_image": PYTHON_IMAGE}}
    cli("queue", "create", name, "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip


def _code(tmp_path: Path, tag: str) -> Path:
    root = tmp_path / f"lcimg{os.urandom(3).hex()}{tag}"
    make_script(root, "main.py", f"print('hello from {tag}')\n")
    return root


def _build(code: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Launch the code job on the local-container queue, run it with a burst agent, and
    return the finished run."""
    run_id = cli("launch", "-q", "build", "-u", str(code), "-E", "python main.py",
                 check=True, env=env).stdout.strip()  # fmt: skip
    cli("agent", "-q", "build", "--burst", check=True, env=env, timeout=300)
    run = json.loads(cli("runs", "show", run_id, "--json", check=True, env=env).stdout)
    assert run["state"] == "finished", run
    return dict(run)


def _listed(image: str, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    out = json.loads(cli("images", "list", "--json", check=True, env=env).stdout)
    found = [i for i in out if image in i["names"]]
    return found[0] if found else None


def _exists(docker: Any, image: str) -> bool:
    import docker as docker_lib

    try:
        docker.images.get(image)
    except docker_lib.errors.ImageNotFound:
        return False
    return True


@pytest.fixture
def cleanup(docker: Any) -> Any:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(Exception):
            docker.images.remove(name, force=True)


def test_images_list_and_prune_keep_what_a_job_version_or_a_queued_run_needs(
    docker: Any, tmp_path: Path, cleanup: list[str]
) -> None:
    _queue()
    code = _code(tmp_path, "a")
    run = _build(code)
    image = run["image"]
    cleanup.append(image)
    assert image.startswith(f"launchctl/{code.name}:")
    assert docker.images.get(image).labels["launchctl.home"]  # which home built it

    listed = _listed(image)
    assert listed is not None, "the image this home built is listed"
    assert listed["status"] == "kept" and listed["home"] == "this"
    assert listed["versions"] == [f"{run['entity']}/{code.name}:v0"]
    assert listed["size"] > 0 and listed["unique_size"] is not None
    table = cli("images", "list", check=True).stdout
    assert image in table and "kept" in table and f"{code.name}:v0" in table

    # A job version points at it: prune keeps it.
    out = cli("images", "prune", "--yes", check=True).stdout
    assert image not in out and _exists(docker, image)

    cli("job", "delete", code.name, "--force", "--yes", check=True)
    assert _listed(image)["status"] == "unused"  # type: ignore[index]

    # A queued run that names the image keeps it, whatever its job.
    queued = cli("launch", "-q", "build", "-d", image, check=True).stdout.strip()
    listed = _listed(image)
    assert listed is not None
    assert (listed["status"], listed["active_runs"]) == ("in use", [queued])
    cli("images", "prune", "--yes", check=True)
    assert _exists(docker, image)
    cli("runs", "cancel", queued, check=True)

    # No terminal and no --yes: refused, nothing removed.
    refused = cli("images", "prune")
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr and "remove 1 unused image" in refused.stderr
    assert _exists(docker, image)

    done = cli("images", "prune", "--yes", check=True)
    assert f"removed {image}" in done.stdout
    assert "removed 1 image, " in done.stdout and " freed" in done.stdout
    assert not _exists(docker, image)
    assert _listed(image) is None
    assert "no unused images" in cli("images", "prune", "--yes", check=True).stdout


def test_two_homes_never_prune_each_others_images_nor_an_unlabelled_one(
    docker: Any, tmp_path: Path, home: Path, cleanup: list[str]
) -> None:
    other = {"LAUNCHCTL_HOME": str(tmp_path / "other-home")}
    _queue()
    cli("queue", "create", "build", "-r", "local-container", "--config",
        json.dumps({"builder": {"base_image": PYTHON_IMAGE}}), check=True, env=other)  # fmt: skip
    mine_code, theirs_code = _code(tmp_path, "mine"), _code(tmp_path, "theirs")
    mine = _build(mine_code)["image"]
    theirs = _build(theirs_code, env=other)["image"]
    cleanup += [mine, theirs]
    # An image with launchctl's build label but no home label (built before images said
    # which home built them): listed as built elsewhere, never pruned.
    legacy = f"launchctl/{mine_code.name}-legacy:0000000000000000"
    dockerfile = f"FROM {BUSYBOX}\nLABEL launchctl.build=0000000000000000 launchctl.job=x\n"
    docker.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=legacy, rm=True)
    cleanup.append(legacy)

    # Both homes delete their jobs: in each, only its own image is unused.
    cli("job", "delete", mine_code.name, "--force", "--yes", check=True)
    cli("job", "delete", theirs_code.name, "--force", "--yes", check=True, env=other)
    assert _listed(theirs)["status"] == "built elsewhere"  # type: ignore[index]
    assert _listed(legacy)["status"] == "built elsewhere"  # type: ignore[index]
    assert _listed(legacy)["home"] is None  # type: ignore[index]
    assert _listed(mine, env=other)["status"] == "built elsewhere"  # type: ignore[index]

    out = cli("images", "prune", "--yes", check=True).stdout
    assert f"removed {mine}" in out and theirs not in out and legacy not in out
    assert not _exists(docker, mine)
    assert _exists(docker, theirs) and _exists(docker, legacy)

    out = cli("images", "prune", "--yes", check=True, env=other).stdout
    assert f"removed {theirs}" in out and legacy not in out
    assert not _exists(docker, theirs) and _exists(docker, legacy)


def test_images_commands_refuse_bad_input_in_one_line() -> None:
    bad = cli("images", "prune", "--older", "3")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    bad = cli("images", "list", "extra")
    assert bad.returncode == 2 and bad.stderr.startswith("launchctl: error:")


def test_an_image_run_whose_pull_cannot_reach_the_registry_says_so_in_one_line(
    docker: Any,
) -> None:
    cli("queue", "create", "offline", "-r", "local-container", check=True)
    run_id = cli("launch", "-q", "offline", "-d", "registry.invalid/lab/train:1",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "offline", "--burst", check=True, timeout=120)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "failed"
    reason = run["reason"]
    assert "\n" not in reason
    assert "cannot reach the registry registry.invalid (offline?)" in reason
    assert "scripts/services.sh registry" in reason and "docker images" in reason
    assert "no such host" in reason  # the engine's cause, once, at the end
    assert reason.count("registry.invalid/lab/train:1") == 1


def test_an_image_two_homes_share_goes_only_once_neither_needs_it(
    docker: Any, tmp_path: Path, cleanup: list[str]
) -> None:
    """The same job and code in two homes is one image (its tag is a content hash): the
    home that reused it names it too, so the home that built it keeps it meanwhile."""
    other = {"LAUNCHCTL_HOME": str(tmp_path / "other-home")}
    _queue()
    cli("queue", "create", "build", "-r", "local-container", "--config",
        json.dumps({"builder": {"base_image": PYTHON_IMAGE}}), check=True, env=other)  # fmt: skip
    code = _code(tmp_path, "shared")
    image = _build(code)["image"]
    cleanup.append(image)
    assert _build(code, env=other)["image"] == image  # reused, not built again
    assert _listed(image, env=other)["status"] == "kept"  # type: ignore[index]

    cli("job", "delete", code.name, "--force", "--yes", check=True)
    listed = _listed(image)
    assert listed is not None and (listed["status"], listed["other_homes"]) == ("kept", 1)
    assert "no unused images" in cli("images", "prune", "--yes", check=True).stdout
    assert _exists(docker, image)

    # The other home lets it go: only its own name goes, the image stays...
    cli("job", "delete", code.name, "--force", "--yes", check=True, env=other)
    out = cli("images", "prune", "--yes", check=True, env=other).stdout
    assert "another home built the image: it stays" in out and "removed 0 images" in out
    assert _exists(docker, image)
    # ... until the home that built it prunes it.
    out = cli("images", "prune", "--yes", check=True).stdout
    assert f"removed {image}" in out and "removed 1 image, " in out
    assert not _exists(docker, image)
