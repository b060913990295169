"""What a run sees, as W&B's runners give it (issue 11): W&B's variables and macros.

The oracle is W&B's own ``LaunchProject.get_env_vars_dict`` (wandb/sdk/launch/
_project_spec.py), given the same run: every variable it sets, launchctl sets with the
same value, but for the deliberate differences named in ``NOT_HERE``. Macros follow
``LaunchProject.fill_macros`` (same file): each built-in W&B fills is filled.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launchctl import macros
from launchctl.errors import LaunchctlError
from launchctl.resolve import render
from tests.conftest import BUSYBOX, cli, cli_json, make_script

project_spec = pytest.importorskip("wandb.sdk.launch._project_spec")

USER = "compat-user"  # the launching user (LAUNCHCTL_USER): W&B's launch spec "author"
# What W&B sets that launchctl does not, and why (README's compatibility table):
NOT_HERE = {
    "WANDB_BASE_URL",  # no W&B server here: a queue passes the agent's by naming it in env
    "WANDB_API_KEY",  # a credential: likewise, only where the queue's env names it
}


def wandb_env(run: dict[str, Any], *, docker_image: str | None, queue: dict | None) -> dict:
    """W&B's variables for the same run, from W&B's own code."""
    api = SimpleNamespace(settings={"base_url": "https://api.wandb.ai"}, api_key="key")
    spec = run["spec"]
    project = project_spec.LaunchProject(
        uri=None,
        job=None,
        api=api,
        launch_spec={"author": spec["author"]},
        target_entity=run["entity"],
        target_project=run["project"],
        name=run["name"],
        docker_config={"docker_image": docker_image} if docker_image else {},
        git_info={},
        overrides=spec.get("overrides") or {},
        resource=run["resource"],
        resource_args={},
        run_id=run["id"],
    )
    if queue is not None:
        project.queue_name = queue["name"]
        project.queue_entity = queue["entity"]
        project.run_queue_item_id = run["id"]  # launchctl's queue item is the run
    return dict(project.get_env_vars_dict(api, 32670))


def seen_env(log: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHCTL_USER", USER)


@pytest.mark.parametrize(
    "kind",
    ["image-run-queued", "image-run-direct", "process-run-queued"],
)
def test_a_run_sees_wandbs_variables_with_wandbs_values(
    kind: str, docker: Any, tmp_path: Path, as_user: None
) -> None:
    # W&B: get_env_vars_dict (runner/local_container.py and runner/local_process.py both
    # call it): WANDB_DOCKER only where the run was given an image (-d).
    sets = ["--set", "lr=0.5", "-p", "compat"]
    if kind == "process-run-queued":
        cli("queue", "create", "pq", check=True)
        make_script(tmp_path / "code", "env.sh", "env\n")
        launch = ["-q", "pq", "-u", str(tmp_path / "code"), "-E", "sh env.sh"]
    else:
        launch = ["-d", BUSYBOX, "-E", "env", "-r", "local-container"]
        if kind == "image-run-queued":
            cli("queue", "create", "dq", "-r", "local-container", check=True)
            launch = ["-q", "dq", "-d", BUSYBOX, "-E", "env"]
    proc = cli("launch", *launch, *sets, timeout=120)
    if kind == "image-run-direct":
        assert proc.returncode == 0, proc.stderr
        run = cli_json("runs", "list")[0]
    else:
        run_id = proc.stdout.strip()
        cli("agent", "-q", launch[1], "--burst", check=True, timeout=120)
        run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished", run
    seen = seen_env(cli("logs", run["id"], check=True).stdout)
    queue = cli_json("queue", "show", launch[1]) if launch[0] == "-q" else None
    image = None if kind.startswith("process") else BUSYBOX
    expected = wandb_env(run, docker_image=image, queue=queue)
    for name, value in expected.items():
        if name in NOT_HERE:
            continue
        assert seen.get(name) == value, name
    assert ("WANDB_DOCKER" in seen) == (image is not None)
    assert seen["WANDB_USERNAME"] == USER


def test_an_image_jobs_run_sees_its_image_as_wandb_docker(docker: Any, as_user: None) -> None:
    # W&B: an image job sets the project's docker_image (wandb/apis/public/jobs.py,
    # _configure_launch_project_container), so WANDB_DOCKER names the job's image. W&B also
    # puts the job in WANDB_ARTIFACTS ({"_wandb_job": ...}); launchctl's job is no W&B
    # artifact, and wandb.init would ask W&B for it (failing offline): left out.
    cli("job", "create", "image", BUSYBOX, "-n", "envjob", "-E", "env", check=True)
    cli("queue", "create", "dq", "-r", "local-container", check=True)
    run_id = cli("launch", "-q", "dq", "-j", "envjob", check=True).stdout.strip()
    cli("agent", "-q", "dq", "--burst", check=True, timeout=120)
    seen = seen_env(cli("logs", run_id, check=True).stdout)
    assert seen["WANDB_DOCKER"] == BUSYBOX
    assert json.loads(seen["WANDB_ARTIFACTS"]) == {}
    assert seen["WANDB_JOB_NAME"].endswith("envjob:v0")


# W&B's macros (LaunchProject.fill_macros; W&B docs "Configure launch queue", dynamic
# macros): each built-in, in a docker queue's env, as W&B's docs write them.
MACROS = {
    "project_name": lambda run: run["project"],
    "entity_name": lambda run: run["entity"],
    "run_id": lambda run: run["id"],
    "run_name": lambda run: run["name"],
    "image_uri": lambda run: BUSYBOX,
    "author": lambda run: USER,
}


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_each_wandb_macro_is_filled(macro: str, docker: Any, as_user: None) -> None:
    body = {"env": [f"SEEN=${{{macro}}}"]}
    cli("queue", "create", "dq", "-r", "local-container", "-c", json.dumps(body), check=True)
    run_id = cli("launch", "-q", "dq", "-d", BUSYBOX, "-E", "env", "-p", "macros",
                 "--name", "macro-run", check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "dq", "--burst", check=True, timeout=120)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished", run
    seen = seen_env(cli("logs", run_id, check=True).stdout)
    assert seen["SEEN"] == MACROS[macro](run)


@pytest.mark.parametrize("author", ["..", "a/../../etc", "x\ny"])
def test_author_is_a_launchers_value_and_cannot_leave_the_admins_folder(author: str) -> None:
    # ${author} feeds host paths as the run's names do: the name rule, then the mount rule.
    run = {"id": "r1", "project": "p", "entity": "e", "name": "n", "spec": {"author": author}}
    with pytest.raises(LaunchctlError):
        found = macros.Macros(macros.builtins_for(run), {})
        queue = {"name": "q", "config": {"resource_args": {"local-container": {
            "volume": "/data/${author}:/data"}}}}  # fmt: skip
        render(queue, {}, "local-container", found)
