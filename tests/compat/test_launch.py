"""W&B compat (issue 11, part B): `wandb launch` commands and launch specs.

Each case is an input W&B documents or tests: the ``launch`` command in wandb/cli/cli.py
(W&B 0.31.0: every option, its short flag, its refusals), the launch spec W&B builds in
wandb/sdk/launch/utils.py (``construct_launch_spec``, ``fetch_and_validate_template_variables``,
``strip_resource_args_and_template_vars``) and _launch_add.py, W&B's CLI tests in
tests/system_tests/test_launch/test_launch_cli.py, and the docs page
https://docs.wandb.ai/ref/cli/wandb-launch/. Where W&B exposes the rule as a function, the
case asks it for the verdict (an oracle) and asserts launchctl agrees. Every case runs the
real ``launchctl launch`` and checks the verdict and what the run sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import (
    BUSYBOX,
    PYTHON_IMAGE,
    cli,
    cli_json,
    git,
    make_script,
    table_counts,
    wait_for,
)

CLI_PY = "wandb/cli/cli.py (launch)"
DOCS = "https://docs.wandb.ai/ref/cli/wandb-launch/"
CLI_TESTS = "tests/system_tests/test_launch/test_launch_cli.py"
UTILS = "wandb/sdk/launch/utils.py"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A job folder whose script prints what a run sees, as JSON on its last line."""
    root = tmp_path / "proj"
    body = (
        "import json, os, sys\n"
        "keys = ['WANDB_CONFIG', 'WANDB_NAME', 'WANDB_PROJECT', 'WANDB_ENTITY', 'S', 'I', 'N']\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.path.basename(os.getcwd()),\n"
        "                  'env': {k: os.environ.get(k) for k in keys}}))\n"
    )
    make_script(root, "main.py", body)
    make_script(root / "sub", "train.py", "print('hello from sub/train.py')\n")
    return root


def seen(stdout: str) -> dict[str, Any]:
    """What the code fixture's script printed: its last JSON line."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    return dict(json.loads(lines[-1]))


def one_line_refusal(proc: Any) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(lines[0])


# -- the refusals of W&B's launch command ---------------------------------------------------
REFUSED = [
    # cli.py: "Cannot use both --async and --queue with wandb launch"
    pytest.param(["--async", "-q", "default", "-E", "python main.py"], "--async",
                 id="async-with-queue"),
    # cli.py: "--priority flag requires --queue to be set"
    pytest.param(["-P", "high", "-E", "python main.py"], "--priority", id="priority-no-queue"),
    # cli.py: -P is click.Choice(["critical", "high", "medium", "low"])
    pytest.param(["-q", "default", "-P", "urgent", "-E", "python main.py"], "urgent",
                 id="priority-not-a-choice"),
    # cli.py: "Cannot provide a uri without an entry point."
    pytest.param([], "--entry-point", id="uri-without-entry-point"),
    # cli.py: "Cannot provide both a uri and a job name."
    pytest.param(["-E", "python main.py", "-j", "hello"], "--job", id="uri-and-job"),
    # cli.py: "'--set-var' flag requires queue to be set"
    pytest.param(["-E", "python main.py", "-v", "test_int=2"], "--queue", id="set-var-no-queue"),
    # cli.py / docs: --base-image "Incompatible with --docker-image"
    pytest.param(["-E", "python main.py", "-B", BUSYBOX, "-d", BUSYBOX], "--docker-image",
                 id="base-image-with-docker-image"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "named"), REFUSED)
def test_wandb_refusals_are_one_line_and_write_nothing(
    ready: Path, code: Path, extra: list[str], named: str
) -> None:
    before = table_counts(ready)  # the store holds the queue 'default' from its start
    line = one_line_refusal(cli("launch", "-u", str(code), *extra))
    assert named in line
    assert table_counts(ready) == before


# W&B's docs say --build-context is "Compatible only with -u" (and --job-name, -g, -B name
# the job -u creates, cli.py); W&B ignores them with -j. launchctl refuses: never silently.
@pytest.mark.parametrize(
    "flag",
    [["--build-context", "sub"], ["--job-name", "x"], ["-J", "x"], ["-B", BUSYBOX]],
    ids=["build-context", "job-name", "J", "base-image"],
)
def test_job_flags_need_a_uri(ready: Path, code: Path, flag: list[str]) -> None:
    cli("job", "create", "code", str(code), "-E", "python main.py", "--name", "hello", check=True)
    before = table_counts(ready)
    line = one_line_refusal(cli("launch", "-j", "hello", *flag))
    assert "needs -u" in line
    assert table_counts(ready) == before


# -- --set-var: W&B's parser as the oracle ---------------------------------------------------
# The queue of W&B's test_launch_template_vars (CLI_TESTS): three fields, one per type.
SCHEMAS = {"test_str": {"type": "string"}, "test_int": {"type": "integer"},
           "test_num": {"type": "number"}}  # fmt: skip
QUEUE_CONFIG = {
    "resource_args": {
        "local-process": {"env": {"S": "{{test_str}}", "I": "{{test_int}}", "N": "{{test_num}}"}}
    },
    "template_variables": {name: {**schema, "default": {"string": "d", "integer": 1,
                           "number": 0.5}[schema["type"]]} for name, schema in SCHEMAS.items()},
}  # fmt: skip


def wandb_set_vars(pairs: list[str]) -> dict[str, Any] | None:
    """W&B's verdict (utils.fetch_and_validate_template_variables): the typed values, or
    None where it raises LaunchError."""
    from wandb.sdk.launch.errors import LaunchError
    from wandb.sdk.launch.utils import fetch_and_validate_template_variables

    queue = SimpleNamespace(
        name="test-queue",
        template_variables=[{"name": n, "schema": json.dumps(s)} for n, s in SCHEMAS.items()],
    )
    try:
        return dict(fetch_and_validate_template_variables(queue, pairs))
    except LaunchError:
        return None


SET_VARS = [
    # The five cases of W&B's test_launch_template_vars (CLI_TESTS).
    pytest.param(["test_str=str1", "test_int=2", "test_num=2.5"], id="wandb-test-accepted"),
    pytest.param(["test_str=str1", "test_int=2.5", "test_num=2.5"], id="wandb-test-int-2.5"),
    pytest.param(["test_str=str1", "test_int=2", "test_num=abc"], id="wandb-test-num-abc"),
    pytest.param(["illegal_override=3"], id="wandb-test-not-a-field"),
    pytest.param(["test_str=str1,test_int=2,test_num=2.5"], id="wandb-test-commas"),
    # The same parser on inputs its rule decides (UTILS: exactly one '=' per flag).
    pytest.param(["test_str=a=b"], id="two-equals"),
    pytest.param(["test_str"], id="no-equals"),
    pytest.param(["test_str="], id="empty-string-value"),
    pytest.param(["test_str=[1, 2]"], id="string-field-keeps-text"),
    pytest.param(["test_str=true"], id="string-field-true-is-text"),
    pytest.param(["test_int="], id="empty-integer"),
    pytest.param(["test_num=3"], id="number-from-integer-text"),
]


@pytest.mark.parametrize("pairs", SET_VARS)
def test_set_var_follows_wandbs_parser(ready: Path, code: Path, pairs: list[str]) -> None:
    cli("queue", "create", "tq", "--config", json.dumps(QUEUE_CONFIG), check=True)
    verdict = wandb_set_vars(pairs)
    before = table_counts(ready)
    flags = [arg for pair in pairs for arg in ("--set-var", pair)]
    proc = cli("launch", "-q", "tq", "-u", str(code), "-E", "python main.py", *flags, "--json")
    if verdict is None:
        one_line_refusal(proc)
        assert table_counts(ready) == before
        return
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["spec"]["template_variables"] == verdict
    for name, value in verdict.items():  # the same type W&B gives it, not only an equal value
        assert type(run["spec"]["template_variables"][name]) in (type(value), int), name


def test_set_var_values_reach_the_run(code: Path) -> None:
    """W&B's accepted case, run: the queue's env renders the typed values."""
    cli("queue", "create", "tq", "--config", json.dumps(QUEUE_CONFIG), check=True)
    run_id = cli("launch", "-q", "tq", "-u", str(code), "-E", "python main.py", "-v",
                 "test_str=str1", "-v", "test_int=2", "-v", "test_num=2.5",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "tq", "--burst", check=True)
    env = seen(cli("logs", run_id, check=True).stdout)["env"]
    assert (env["S"], env["I"], env["N"]) == ("str1", "2", "2.5")


# -- a bare --queue is the queue 'default' ----------------------------------------------------
# cli.py: --queue is_flag=False, flag_value="default"; docs: "If supplied without an argument
# (`--queue`), defaults to queue 'default'". W&B's own tests write --queue=default.
@pytest.mark.parametrize(
    "where",
    [["-q"], ["--queue"], ["--queue", "-E", "python main.py"], ["--queue=default"]],
    ids=["q-last", "queue-last", "queue-before-option", "queue-equals"],
)
def test_bare_queue_means_default(code: Path, where: list[str]) -> None:
    args = ["launch", "-u", str(code), *where]
    if "-E" not in where:
        args += ["-E", "python main.py"]
    run = json.loads(cli(*args, "--json", check=True).stdout)
    assert run["queue_name"] == "default"


def test_a_value_that_looks_like_q_is_not_a_bare_queue(code: Path) -> None:
    """`--args -q`: the -q is --args's value, not W&B's bare queue (a direct launch)."""
    proc = cli("launch", "-u", str(code), "-E", "python main.py", "--args", "-q", check=True)
    assert seen(proc.stdout)["argv"] == ["-q"]
    assert cli_json("runs", "list")[0]["queue_name"] is None


# -- the job a -u launch creates ---------------------------------------------------------------
def test_job_name_names_the_job(code: Path) -> None:
    """W&B's test_launch_from_uri_creates_job (CLI_TESTS): --job-name test-job names it."""
    proc = cli("launch", "-p", "test", "-u", str(code), "-E", "python main.py",
               "--job-name", "test-job", check=True)  # fmt: skip
    jobs = cli_json("job", "list")
    assert [j["name"] for j in jobs] == ["test-job"]
    run = cli_json("runs", "list")[0]
    assert run["name"].startswith("test-job-") and run["project"] == "test"
    env = seen(proc.stdout)["env"]
    assert env["WANDB_NAME"] == run["name"] and env["WANDB_PROJECT"] == "test"


def test_build_context_is_where_a_process_entry_point_runs(code: Path) -> None:
    """cli.py / docs: --build-context, the path of the build context within the source."""
    proc = cli("launch", "-u", str(code), "--build-context", "sub", "-E", "python train.py",
               check=True)  # fmt: skip
    assert "hello from sub/train.py" in proc.stdout


def test_build_context_and_base_image_make_the_job(code: Path) -> None:
    """cli.py: --build-context and -B/--base-image are passed to _create_job for the job -u
    creates (with --job-name): the job version records them."""
    cli("launch", "-q", "-u", str(code), "--build-context", "sub", "-B", PYTHON_IMAGE,
        "-E", "python train.py", "-J", "ctx-job", check=True)  # fmt: skip
    shown = cli_json("job", "show", "ctx-job")
    assert shown["metadata"] == {"base_image": PYTHON_IMAGE, "build_context": "sub"}
    assert shown["entrypoint"] == ["python", "train.py"]


def test_build_context_and_base_image_build_the_container(docker: Any, code: Path) -> None:
    """cli.py: -B/--base-image, "Docker image to run job code in", and --build-context: the
    image is built from the base, the entry point relative to the build context."""
    proc = cli("launch", "-r", "local-container", "-u", str(code), "--build-context", "sub",
               "-B", PYTHON_IMAGE, "-E", "python train.py", "--json", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert "hello from sub/train.py" in cli("logs", run["id"], check=True).stdout


def test_git_version_runs_that_commit(tmp_path: Path) -> None:
    """cli.py: -g/--git-version, "Version of the project to run, as a Git commit reference"."""
    repo = tmp_path / "repo"
    make_script(repo, "main.py", "print('version one')\n")
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    make_script(repo, "main.py", "print('version two')\n")
    git("commit", "-qam", "two", cwd=repo)
    uri = f"file://{repo}"
    old = cli("launch", "-u", uri, "-E", "python main.py", "-g", first, check=True)
    assert "version one" in old.stdout
    new = cli("launch", "-u", uri, "-E", "python main.py", check=True)
    assert "version two" in new.stdout


def test_git_version_on_a_folder_is_refused(ready: Path, code: Path) -> None:
    """-g is a git ref: a code folder has none (W&B passes it to a git job only)."""
    before = table_counts(ready)
    line = one_line_refusal(cli("launch", "-u", str(code), "-E", "python main.py", "-g", "main"))
    assert "--git-version" in line
    assert table_counts(ready) == before


# -- --async -------------------------------------------------------------------------------------
def test_async_direct_launch_returns_and_the_run_still_runs(code: Path) -> None:
    """cli.py --async: "unless --async is set, wandb launch will wait for the job to finish"."""
    slow = make_script(code, "slow.py", "import time\ntime.sleep(2)\nprint('done late')\n")
    proc = cli("launch", "-u", str(code), "-E", f"python {slow.name}", "--async", check=True)
    run_id = proc.stdout.strip()
    assert re.fullmatch(r"[a-z0-9]{8}", run_id), proc.stdout
    # the command it names follows the run (`logs` alone prints what is there and exits)
    assert f"run {run_id} is running; `launchctl logs -f {run_id}` follows it" in proc.stderr
    assert cli_json("runs", "show", run_id)["state"] == "running"
    done = wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "finished", timeout=60,
                    what="the async run to finish")  # fmt: skip
    assert done
    assert "done late" in cli("logs", run_id, check=True).stdout


def test_async_docker_image(docker: Any) -> None:
    """W&B's test_launch_supplied_docker_image (CLI_TESTS): `launch --async --docker-image
    IMAGE` exits 0 and the container gets WANDB_CONFIG='{}'."""
    proc = cli("launch", "--async", "--docker-image", BUSYBOX, "-E", "env", check=True)
    run_id = proc.stdout.strip()
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "finished", timeout=60,
             what="the async container run")  # fmt: skip
    log = cli("logs", run_id, check=True).stdout
    assert "WANDB_CONFIG={}" in log


# -- the launch spec (-c) ----------------------------------------------------------------------
def test_resource_args_and_template_variables_follow_wandb(ready: Path, code: Path) -> None:
    """UTILS strip_resource_args_and_template_vars: both set -> template_variables win, with
    a warning. The oracle runs W&B's function on the same spec."""
    from wandb.sdk.launch.utils import strip_resource_args_and_template_vars

    spec = {"resource_args": {"local-process": {"env": {"S": "from-resource-args"}}},
            "template_variables": {"test_str": "from-vars"}}  # fmt: skip
    theirs = json.loads(json.dumps(spec))
    strip_resource_args_and_template_vars(theirs)
    cli("queue", "create", "tq", "--config", json.dumps(QUEUE_CONFIG), check=True)
    proc = cli("launch", "-q", "tq", "-u", str(code), "-E", "python main.py", "-c",
               json.dumps(spec), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "template_variables" in proc.stderr and "resource_args" in proc.stderr
    run = json.loads(proc.stdout)
    assert ("resource_args" in run["spec"]) == ("resource_args" in theirs)
    assert run["spec"]["template_variables"] == theirs["template_variables"]
    cli("agent", "-q", "tq", "--burst", check=True)
    assert seen(cli("logs", run["id"], check=True).stdout)["env"]["S"] == "from-vars"


def test_wandb_spec_keys_are_accepted(code: Path) -> None:
    """A spec with the keys construct_launch_spec writes (UTILS): overrides, docker, git,
    run_id, sweep_id. Those meaningless here get one note each; the rest apply."""
    spec = {
        "overrides": {"run_config": {"lr": 0.1}, "args": ["--epochs", "2"], "artifacts": {}},
        "git": {"version": None},
        "run_id": "abcd1234",
        "sweep_id": "sw1",
        "name": "from-spec",
    }
    proc = cli("launch", "-u", str(code), "-E", "python main.py", "-c", json.dumps(spec),
               check=True)  # fmt: skip
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 3 and all("not used" in n for n in notes), proc.stderr
    out = seen(proc.stdout)
    assert json.loads(out["env"]["WANDB_CONFIG"]) == {"lr": 0.1}
    assert out["argv"] == ["--epochs", "2"] and out["env"]["WANDB_NAME"] == "from-spec"


def test_wandb_name_env_is_the_run_name(code: Path) -> None:
    """cli.py: --name has envvar="WANDB_NAME"."""
    proc = cli("launch", "-u", str(code), "-E", "python main.py", env={"WANDB_NAME": "named"},
               check=True)  # fmt: skip
    assert seen(proc.stdout)["env"]["WANDB_NAME"] == "named"


# -- -j ENTITY/PROJECT/NAME:ALIAS and -p ---------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "project"),
    [([], "proj"), (["-p", "other"], "other")],
    ids=["project-from-job", "p-wins"],
)
def test_full_job_reference_and_project(code: Path, extra: list[str], project: str) -> None:
    """UTILS set_project_entity_defaults: with -j ENTITY/PROJECT/NAME, the run's project is
    -p, else the job's (get_project_from_job)."""
    cli("job", "create", "code", str(code), "-E", "python main.py", "--name", "hello", "-p",
        "proj", check=True)  # fmt: skip
    entity = cli_json("job", "list")[0]["entity"]
    proc = cli("launch", "-j", f"{entity}/proj/hello:latest", *extra, check=True)
    assert seen(proc.stdout)["env"]["WANDB_PROJECT"] == project


def test_docs_prebuilt_image_on_a_queue_without_project(docker: Any) -> None:
    """docs.wandb.ai/support/build_container_launch: `wandb launch -d <docker-image-uri> -q
    <queue-name> -E <entrypoint>`. W&B's code (cli.py) refuses -q with -d and no -p ("Cannot
    use --queue and --docker together without a project"): it must make an image job in a
    project. launchctl has a default project, so the documented command works (a deliberate
    difference, in the README's table)."""
    cli("queue", "create", "dq", "-r", "local-container", check=True)
    run_id = cli("launch", "-d", BUSYBOX, "-q", "dq", "-E", "echo from-the-image",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "dq", "--burst", check=True)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished" and run["project"] == "uncategorized"
    assert "from-the-image" in cli("logs", run_id, check=True).stdout
