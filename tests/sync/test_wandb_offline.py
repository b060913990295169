"""Runs that used wandb themselves, offline (issue 13): ``WANDB_MODE=offline`` only when the
queue or the user asks, and ``launchctl sync`` uploading the run's own
``wandb/offline-run-*`` folders with W&B's ``wandb sync``, judged by ``wandb.Api()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, cli_json, make_script
from tests.sync.standin import WandbStandIn

OFFLINE = {"resource_args": {"local-process": {"env": {"WANDB_MODE": "offline"}}}}

# An unmodified W&B script: wandb.init() takes its mode, run id, entity and project from
# the environment launchctl gives it (offline only when asked).
TRAIN = """\
import os
import wandb

run = wandb.init(config={"lr": 0.01})
for step in range(5):
    wandb.log({"loss": 1.0 / (step + 1), "acc": step / 10})
run.summary["best_acc"] = 0.4
print("mode:", os.environ.get("WANDB_MODE", "-"), "id:", run.id)
run.finish()
"""

MODE = """\
import os
print("mode:", os.environ.get("WANDB_MODE", "-"))
"""


def _quiet_wandb() -> dict[str, str]:
    """W&B's client in a run: no git probing, no code saving, no system metrics."""
    return {
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_MACHINE_INFO": "true",
    }


def _run_queued(queue: str, job: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create ``queue`` (with ``config``), launch ``python train.py`` from ``job`` on it,
    drain it with an agent in burst mode, and return the run as ``runs show`` has it."""
    args = ["queue", "create", queue]
    if config is not None:
        args += ["-c", json.dumps(config)]
    cli(*args, check=True)
    run_id = cli(
        "launch", "-q", queue, "-u", str(job), "-E", "python train.py", check=True
    ).stdout.strip()
    cli("agent", "-q", queue, "--burst", check=True, env=_quiet_wandb(), timeout=120)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished", Path(run["log_path"]).read_text()
    return run


def _log(run: dict[str, Any]) -> str:
    return Path(run["log_path"]).read_text()


def _sync(server: WandbStandIn, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("sync", *args, env={**server.env(), **env}, timeout=180)


# -- WANDB_MODE=offline only when asked ----------------------------------------------


def test_wandb_mode_offline_only_when_the_queue_or_the_launch_asks(tmp_path: Path) -> None:
    job = tmp_path / "job"
    make_script(job, "train.py", MODE)
    plain = _run_queued("plain", job)
    assert "mode: -" in _log(plain)  # never by default
    asked_by_queue = _run_queued("offline", job, OFFLINE)
    assert "mode: offline" in _log(asked_by_queue)
    # The user asks on one launch, with W&B's resource args (-R), on a plain queue.
    run_id = cli("launch", "-q", "plain", "-u", str(job), "-E", "python train.py",
                 "-R", '{"local-process": {"env": {"WANDB_MODE": "offline"}}}',
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "plain", "--burst", check=True, timeout=120)
    assert "mode: offline" in _log(cli_json("runs", "show", run_id))


# -- uploading a run's offline folders -------------------------------------------------


@pytest.fixture
def offline_run(tmp_path: Path) -> dict[str, Any]:
    """A finished run whose script called wandb.init() offline (the queue asked)."""
    job = tmp_path / "job"
    make_script(job, "train.py", TRAIN)
    run = _run_queued("offline", job, OFFLINE)
    assert f"mode: offline id: {run['id']}" in _log(run)
    return run


def _api(server: WandbStandIn) -> Any:
    import wandb

    return wandb.Api(overrides={"base_url": server.url}, api_key=server.api_key, timeout=20)


def test_an_offline_wandb_run_is_synced_with_wandb_sync_and_read_back_by_the_official_client(
    offline_run: dict[str, Any], wandb_server: WandbStandIn
) -> None:
    run = offline_run
    path = f"{run['entity']}/{run['project']}/{run['id']}"
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    assert wandb_server.api_key not in proc.stdout + proc.stderr
    remote = _api(wandb_server).run(path)  # under the launchctl run id
    assert remote.state == "finished"
    history = list(remote.scan_history())
    assert [row["loss"] for row in history] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert remote.summary["best_acc"] == 0.4
    assert remote.summary["acc"] == 0.4
    assert remote.config["lr"] == 0.01
    # The launch run links to the W&B run, in runs show and its --json.
    shown = cli("runs", "show", run["id"], check=True).stdout
    assert f"wandb run:  {path} on {wandb_server.url}" in shown
    links = cli_json("runs", "show", run["id"])["wandb_runs"]
    assert [(x["wandb_run_path"], x["base_url"]) for x in links] == [(path, wandb_server.url)]
    # A second sync uploads nothing again: not one request.
    before = len(wandb_server.requests)
    again = _sync(wandb_server)
    assert again.returncode == 0, again.stderr
    assert len(wandb_server.requests) == before
    assert list(_api(wandb_server).run(path).scan_history()) == history


def test_dry_run_and_status_show_the_folder_owed_and_send_nothing(
    offline_run: dict[str, Any], wandb_server: WandbStandIn
) -> None:
    status = cli("sync", "status", "--json", env=wandb_server.env(), check=True).stdout
    assert "wandb/offline-run-" in status and offline_run["id"] in status
    proc = _sync(wandb_server, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert wandb_server.runs == []


def _plant_foreign_folder(tmp_path: Path, run: dict[str, Any]) -> Path:
    """Another user's real offline W&B run, and links to it in ``run``'s working copy."""
    other = tmp_path / "other-user"
    other.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(_quiet_wandb(), WANDB_MODE="offline", WANDB_RUN_ID="theirs",
               WANDB_ENTITY=run["entity"], WANDB_PROJECT=run["project"])  # fmt: skip
    (other / "secret.txt").write_text("their secret\n")
    code = "import wandb\nr = wandb.init()\nwandb.log({'x': 1})\nr.finish()\n"
    subprocess.run([sys.executable, "-c", code], cwd=other, env=env, check=True, timeout=120)
    return next((other / "wandb").glob("offline-run-*"))


def test_a_link_named_like_an_offline_folder_is_never_followed(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    """A job that carries wandb/offline-run-x -> another user's folder (or a wandb -> link):
    nothing of theirs is uploaded, and the sync says it skipped the link."""
    job = tmp_path / "job"
    make_script(job, "train.py", MODE)
    run = _run_queued("plain", job)
    theirs = _plant_foreign_folder(tmp_path, run)
    workdir = Path(run["workdir"])
    (workdir / "wandb").mkdir()
    (workdir / "wandb" / "offline-run-20260101_000000-theirs").symlink_to(theirs)
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    assert "offline-run-20260101_000000-theirs is not a folder of its own" in proc.stderr
    assert not [r for r in wandb_server.runs if r.name == "theirs"]
    # The same with the wandb folder itself a link.
    (workdir / "wandb" / "offline-run-20260101_000000-theirs").unlink()
    (workdir / "wandb").rmdir()
    (workdir / "wandb").symlink_to(theirs.parent)
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in wandb_server.runs if r.name == "theirs"]


def test_a_file_saved_through_a_link_out_of_the_run_is_not_uploaded(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    """``wandb.save`` links each saved file into files/; a saved file that is itself a link
    out of the run's folder (to another user's file) is left out, the others go."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's\n")
    job = tmp_path / "job"
    make_script(job, "train.py", (
        "import os, wandb\n"
        "run = wandb.init()\n"
        "open('model.txt', 'w').write('weights')\n"
        f"os.symlink({str(secret)!r}, 'stolen.txt')\n"
        "wandb.save('model.txt', policy='now')\n"
        "wandb.save('stolen.txt', policy='now')\n"
        "run.finish()\n"
    ))  # fmt: skip
    run = _run_queued("offline", job, OFFLINE)
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    remote = wandb_server.run(run["entity"], run["project"], run["id"])
    assert remote is not None
    assert remote.files["model.txt"] is not None and "stolen.txt" not in remote.files
    assert "not uploaded" in proc.stderr


def test_without_the_wandb_package_the_folders_wait_and_one_line_says_why(
    offline_run: dict[str, Any], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    """launchctl's Python without wandb (``sys.modules["wandb"] = None``, Python's own way
    to make a package absent) and no ``wandb`` on PATH: nothing is uploaded, one line
    says the folders wait and why, and a later sync with wandb present sends them."""
    hide = tmp_path / "no-wandb"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    env = {"PYTHONPATH": str(hide), "PATH": "/usr/bin:/bin"}
    proc = _sync(wandb_server, **env)
    assert proc.returncode == 0, proc.stderr
    waits = [ln for ln in proc.stderr.splitlines() if "wandb offline folder(s) wait" in ln]
    assert len(waits) == 1 and "the wandb package is not installed" in waits[0]
    assert not [r for r in wandb_server.runs if r.streams.get("wandb-history.jsonl")]
    assert cli_json("runs", "show", offline_run["id"])["wandb_runs"] == []
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    path = f"{offline_run['entity']}/{offline_run['project']}/{offline_run['id']}"
    assert len(list(_api(wandb_server).run(path).scan_history())) == 5


# -- a container run's offline folders ---------------------------------------------------


def test_a_container_run_that_asked_for_offline_mode_keeps_its_wandb_folders_for_sync(
    tmp_path: Path, docker: Any, wandb_server: WandbStandIn
) -> None:
    """A local-container run that asks for WANDB_MODE=offline gets a WANDB_DIR whose files
    outlive the container (a folder of the run's own, mounted at /launchctl-wandb: no host
    path into the store is shown to it), and launchctl sync uploads them. The image's
    Python gets this machine's wandb package through a read-only volume (the test image
    has no wandb of its own)."""
    import wandb

    from tests.conftest import PYTHON_IMAGE

    site = str(Path(wandb.__file__).resolve().parent.parent)
    job = tmp_path / "job"
    make_script(job, "train.py", TRAIN + 'print("dir:", os.environ.get("WANDB_DIR"))\n')
    config = {
        "resource_args": {
            "local-container": {
                "env": {"WANDB_MODE": "offline", "PYTHONPATH": "/site", **_quiet_wandb()},
                "volume": [f"{site}:/site:ro", f"{job}:/job:ro"],
            }
        }
    }
    cli("queue", "create", "box", "-r", "local-container", "-c", json.dumps(config), check=True)
    run_id = cli(
        "launch", "-q", "box", "-d", PYTHON_IMAGE, "-E", "python3 /job/train.py", check=True
    ).stdout.strip()
    cli("agent", "-q", "box", "--burst", check=True, timeout=180)
    run = cli_json("runs", "show", run_id)
    log = _log(run)
    assert run["state"] == "finished", log
    assert f"mode: offline id: {run_id}" in log
    assert "dir: /launchctl-wandb" in log
    assert str(Path(run["log_path"]).parent) not in log  # no host path into the store
    status = cli("sync", "status", env=wandb_server.env(), check=True).stdout
    assert "offline-run-" in status
    proc = _sync(wandb_server)
    assert proc.returncode == 0, proc.stderr
    remote = _api(wandb_server).run(f"{run['entity']}/{run['project']}/{run_id}")
    assert [row["loss"] for row in remote.scan_history()] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert remote.summary["best_acc"] == 0.4


def test_a_container_run_gets_no_wandb_dir_unless_it_asked_for_offline_mode(
    tmp_path: Path, docker: Any
) -> None:
    from tests.conftest import BUSYBOX

    cli("queue", "create", "box", "-r", "local-container", check=True)
    run_id = cli(
        "launch", "-q", "box", "-d", BUSYBOX, "-E", "sh -c 'echo dir=${WANDB_DIR:-none}'",
        check=True,
    ).stdout.strip()  # fmt: skip
    cli("agent", "-q", "box", "--burst", check=True, timeout=120)
    run = cli_json("runs", "show", run_id)
    assert "dir=none" in _log(run)
    assert not (Path(run["log_path"]).parent / "wandb-dir").exists()
