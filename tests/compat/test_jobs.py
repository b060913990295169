"""W&B compat (issue 11, part D): `wandb job create` inputs and W&B job references.

Each case is an input W&B documents or tests (``wandb job create`` in wandb/cli/cli.py and
wandb/sdk/launch/create_job.py, W&B 0.31.0; W&B's tests under
tests/unit_tests/test_launch/), with W&B's verdict, run through the real launchctl CLI.
Where W&B exposes the rule as a function (``make_artifact_name_safe``), the case asks it
for the verdict. The effect is checked where there is one: ``job show``, the version a
``-j ENTITY/PROJECT/NAME:ALIAS`` launch runs, and, for the build context and Dockerfile
paths, a real docker build and run on a local-container queue.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUSYBOX, cli, cli_json, make_script, table_counts

CLI = "wandb/cli/cli.py (job create)"
CREATE_JOB = "wandb/sdk/launch/create_job.py"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    make_script(root, "main.py", "print('hello from main')\n")
    make_script(root, "train.py", "print('hello from train')\n")
    return root


def wandb_accepts_name(name: str) -> bool:
    """W&B's verdict on a job name: create_job._create_job refuses a name that
    ``make_artifact_name_safe`` would change."""
    from wandb.util import make_artifact_name_safe

    return make_artifact_name_safe(name) == name


def wandb_accepts_runtime(runtime: str) -> bool:
    """W&B's verdict on -r: create_job._create_job's rule, ``^3\\.\\d+$`` (re.match)."""
    return re.match(r"^3\.\d+$", runtime) is not None


# -- job names: W&B's make_artifact_name_safe as the oracle ---------------------------------


@pytest.mark.parametrize(
    "name",
    [
        # create_job._create_job: "Artifact names may only contain alphanumeric characters,
        # dashes, underscores, and dots. Did you mean: ..." (W&B 0.31.0)
        pytest.param("my job", id="name-with-space"),
        pytest.param("team:train", id="name-with-colon"),
        pytest.param("my-train-job", id="name-docs-example"),  # create_job docstring example
        pytest.param("train_v2.1", id="name-dots-underscores"),
    ],
)
def test_job_name_verdict_is_wandbs(code: Path, home: Path, name: str) -> None:
    proc = cli("job", "create", "code", str(code), "-E", "python train.py", "-n", name)
    if wandb_accepts_name(name):
        assert proc.returncode == 0, proc.stderr
        assert cli_json("job", "show", name)["name"] == name
    else:
        assert proc.returncode != 0
        assert proc.stderr.count("\n") == 1 and "did you mean" in proc.stderr
        assert table_counts(home).get("jobs", 0) == 0


# -- runtime (-r): W&B's rule as the oracle --------------------------------------------------


@pytest.mark.parametrize(
    "runtime",
    [
        # create_job docstring: runtime="3.10"; W&B's tests use "3.10" (test_create_job.py,
        # test_create_artifact_metadata)
        pytest.param("3.10", id="runtime-3.10"),
        pytest.param("3.11", id="runtime-3.11"),
        # refused by create_job._create_job: "must be a minor version of Python 3"
        pytest.param("3.10.1", id="runtime-micro-refused"),
        pytest.param("2.7", id="runtime-python2-refused"),
        pytest.param("python3.10", id="runtime-prefixed-refused"),
    ],
)
def test_runtime_verdict_is_wandbs(code: Path, home: Path, runtime: str) -> None:
    proc = cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "rt",
               "-r", runtime)  # fmt: skip
    if wandb_accepts_runtime(runtime):
        assert proc.returncode == 0, proc.stderr
        assert cli_json("job", "show", "rt")["metadata"]["runtime"] == runtime
        assert f"runtime:    python {runtime}" in cli("job", "show", "rt").stdout
    else:
        assert proc.returncode != 0
        assert "minor version of Python 3" in proc.stderr and proc.stderr.count("\n") == 1
        assert table_counts(home).get("jobs", 0) == 0


# -- flags by job type, entry points -----------------------------------------------------------


def test_base_image_is_refused_for_an_image_job(home: Path) -> None:
    # wandb/cli/cli.py job create: "Cannot provide --base-image/-B for an `image` job"
    proc = cli("job", "create", "image", BUSYBOX, "-B", "python:3.11")
    assert proc.returncode != 0 and "--base-image/-B" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert table_counts(home).get("jobs", 0) == 0


def test_runtime_on_an_image_job_is_ignored_with_a_warning() -> None:
    # create_job._make_metadata_for_partial_job: "Setting runtime is not supported for
    # image jobs, ignoring runtime" (a warning; the job is made)
    proc = cli("job", "create", "image", BUSYBOX, "-n", "img", "-r", "3.10", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "runtime" in proc.stderr and "ignored" in proc.stderr
    assert json.loads(proc.stdout)["metadata"] == {}


@pytest.mark.parametrize("job_type", ["code", "git"])
def test_no_entry_point_defaults_to_main_py(code: Path, tmp_path: Path, job_type: str) -> None:
    # wandb/cli/cli.py job create: "No entrypoint provided for {job_type} job, defaulting
    # to main.py"; then create_job._maybe_warn_python_no_executable warns about it
    source = str(code) if job_type == "code" else "https://example.org/team/repo.git"
    proc = cli("job", "create", job_type, source, "-n", "dflt", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entrypoint"] == ["main.py"]
    assert f"no entry point given for the {job_type} job, defaulting to main.py" in proc.stderr
    assert "python file without an executable" in proc.stderr


@pytest.mark.parametrize(
    ("job_type", "entry"),
    [
        # W&B test: tests/unit_tests/test_launch/test_create_job.py,
        # test_create_repo_metadata_entrypoint_traversal -> refused ("Entrypoint cannot
        # contain backward path traversal", create_job._create_repo_metadata)
        pytest.param("git", "../../../../../usr/bin/python3.10 main.py", id="git-traversal"),
        # the same rule for code jobs (issue 11): the script must be inside the job
        pytest.param("code", "python ../../x.py", id="code-traversal"),
    ],
)
def test_entry_point_climbing_out_is_refused(
    code: Path, home: Path, job_type: str, entry: str
) -> None:
    source = str(code) if job_type == "code" else "https://example.org/team/repo.git"
    proc = cli("job", "create", job_type, source, "-E", entry)
    assert proc.returncode != 0 and "climbs out of the job" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert table_counts(home).get("jobs", 0) == 0


@pytest.mark.parametrize(
    "base",
    [
        pytest.param("ubuntu:22.04 as base", id="base-with-as-stage"),  # issue 11
        pytest.param("ubuntu:22.04\nRUN echo pwned", id="base-with-newline"),  # issue 11
    ],
)
def test_base_image_must_be_an_image_reference(code: Path, home: Path, base: str) -> None:
    # wandb/cli/cli.py: -B "Base image to use for the job"; it becomes a FROM line, so it
    # must be a reference by Docker's grammar (launchctl/imageref.py)
    proc = cli("job", "create", "code", str(code), "-E", "python train.py", "-B", base)
    assert proc.returncode != 0 and "not an image reference" in proc.stderr
    assert table_counts(home).get("jobs", 0) == 0


# -- aliases and W&B job references (-j ENTITY/PROJECT/NAME:ALIAS) ---------------------------


def test_aliases_move_to_the_new_version_as_wandbs_do(code: Path) -> None:
    # wandb/cli/cli.py job create: -a/--alias "Alias for the job" (multiple=True);
    # create_job._create_job gives the version its aliases plus "latest". An artifact alias
    # names one version of its collection: given to a new version, it leaves the old one.
    first = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "trn",
                     "-a", "prod", "-a", "exp")  # fmt: skip
    assert first["aliases"] == ["exp", "prod"] and first["version"] == 0
    make_script(code, "train.py", "print('hello from v1')\n")
    second = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "trn",
                      "-a", "prod")  # fmt: skip
    assert second["version"] == 1 and second["aliases"] == ["prod"]
    assert cli_json("job", "show", "trn:prod")["version"] == 1
    assert cli_json("job", "show", "trn:exp")["version"] == 0
    listed = cli_json("job", "list")[0]
    assert listed["aliases"] == {"exp": "v0", "prod": "v1"}
    # the run a -j NAME:ALIAS launch makes runs that version's code
    assert "hello from train" in cli("launch", "-j", "trn:exp", check=True).stdout
    assert "hello from v1" in cli("launch", "-j", "trn:prod", check=True).stdout


def test_description_is_kept_and_shown(code: Path) -> None:
    # wandb/cli/cli.py job create: -d/--description "Description for the job"
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "dsc",
        "-d", "My training job", check=True)  # fmt: skip
    assert cli_json("job", "show", "dsc")["description"] == "My training job"
    assert cli_json("job", "list")[0]["description"] == "My training job"


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        # W&B docs, "Launch a job" (wandb launch -j <entity>/<project>/<job-name>:<alias>);
        # wandb/sdk/launch/utils.py parses job names as entity/project/name:alias
        pytest.param("{entity}/jobs/trn:prod", True, id="ref-entity-project-name-alias"),
        pytest.param("{entity}/jobs/trn", True, id="ref-entity-project-name"),
        pytest.param("trn:prod", True, id="ref-name-alias"),
        pytest.param("{entity}/trn:v0", True, id="ref-entity-name-version"),
        pytest.param("{entity}/other/trn:prod", False, id="ref-wrong-project"),
        pytest.param("{entity}/jobs/trn:nosuch", False, id="ref-unknown-alias"),
    ],
)
def test_wandb_job_reference_resolves_to_that_job(code: Path, ref: str, ok: bool) -> None:
    made = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "trn",
                    "-p", "jobs", "-a", "prod")  # fmt: skip
    proc = cli("launch", "-j", ref.format(entity=made["entity"]))
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert "hello from train" in proc.stdout
    else:
        assert proc.returncode != 0 and proc.stderr.count("\n") == 1
        assert "project 'jobs', not 'other'" in proc.stderr or "no alias 'nosuch'" in proc.stderr


# -- build context and Dockerfile paths: a real build and run -------------------------------


def _context_job(root: Path) -> Path:
    """A job whose build context ``sub`` holds a Dockerfile at its top and one in
    ``docker/``; ``outside.txt`` at the job's root is not in the context."""
    make_script(root, "outside.txt", "not in the context\n")
    dockerfile = f"FROM {BUSYBOX}\nCOPY . /ctx\nWORKDIR /ctx\n"
    make_script(root / "sub", "Dockerfile", dockerfile)
    make_script(root / "sub" / "docker", "Dockerfile", dockerfile + "ENV FROM_DOCKER_DIR=1\n")
    make_script(
        root / "sub", "run.sh", "echo ctx: $(ls /ctx | tr '\\n' ' ') sub=$FROM_DOCKER_DIR\n"
    )
    return root


@pytest.mark.parametrize(
    ("dockerfile", "from_docker_dir"),
    [
        # wandb/cli/cli.py job create -D: "If --build-context is provided, the Dockerfile
        # path will be relative to the build context"; W&B's builder joins them
        # (wandb/sdk/launch/builder/context_manager.py, create_build_context)
        pytest.param("Dockerfile", False, id="dockerfile-bare"),
        pytest.param("./Dockerfile", False, id="dockerfile-dot-slash"),
        pytest.param("docker/Dockerfile", True, id="dockerfile-in-subfolder"),
    ],
)
def test_dockerfile_is_read_in_the_build_context_and_only_it_is_sent(
    docker: Any, tmp_path: Path, dockerfile: str, from_docker_dir: bool
) -> None:
    root = _context_job(tmp_path / "ctxjob")
    cli("job", "create", "code", str(root), "-n", "ctxjob", "-b", "sub", "-D", dockerfile,
        "-E", "sh run.sh", check=True)  # fmt: skip
    shown = cli("job", "show", "ctxjob", check=True).stdout
    assert "context:    sub" in shown
    cli("queue", "create", "ctxq", "-r", "local-container", check=True)
    run_id = cli("launch", "-q", "ctxq", "-j", "ctxjob", check=True).stdout.strip()
    cli("agent", "-q", "ctxq", "--burst", check=True, timeout=300)
    run = cli_json("runs", "show", run_id)
    log = cli("logs", run_id, check=True).stdout
    assert run["state"] == "finished", (run, log)
    line = next(li for li in log.splitlines() if li.startswith("ctx:"))
    assert "run.sh" in line and "docker" in line and "outside.txt" not in line
    assert ("sub=1" in line) is from_docker_dir
    with contextlib.suppress(Exception):  # already gone
        docker.images.remove(run["image"], force=True)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        # Paths that leave the job: refused at job create, nothing stored (W&B joins them
        # to the job's folder unchecked; launchctl keeps a job's files inside it)
        pytest.param(["-b", "../elsewhere"], "climbs out of the job", id="context-dotdot"),
        pytest.param(["-b", "/etc"], "relative to the job's root", id="context-absolute"),
        pytest.param(["-b", "sub", "-D", "../outside.txt"], "climbs out", id="dockerfile-dotdot"),
        pytest.param(["-b", "sub", "-D", "Nope"], "not found", id="dockerfile-missing"),
        pytest.param(["-b", "nosuch"], "is not a folder", id="context-missing"),
        pytest.param(["-b", "escape"], "is not a folder", id="context-link-leaving-the-job"),
    ],
)
def test_paths_leaving_the_job_are_refused(
    tmp_path: Path, home: Path, flags: list[str], said: str
) -> None:
    root = _context_job(tmp_path / "ctxjob")
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    proc = cli("job", "create", "code", str(root), "-E", "sh run.sh", *flags)
    assert proc.returncode != 0 and said in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert table_counts(home).get("jobs", 0) == 0


# -- the name of an image job: W&B's job builder as the oracle -------------------------------


def wandb_image_job(image: str) -> tuple[str, list[str]]:
    """W&B's name and extra aliases for ``wandb job create image IMAGE``
    (wandb/sdk/internal/job_builder.py, JobBuilder._build_image_job_source)."""
    import wandb
    from wandb.sdk.internal.job_builder import JobBuilder

    builder = JobBuilder(settings=wandb.Settings(), verbose=False, files_dir="/nonexistent")
    _, name = builder._build_image_job_source({"docker": image})
    return name, list(builder._aliases)


@pytest.mark.parametrize(
    "image",
    [
        # W&B docs, "Create a launch job" (wandb job create image <image-name> ...)
        pytest.param("localhost:5000/train:1", id="image-registry-port-tag"),
        pytest.param("nvidia/cuda:12.4.1-runtime-ubuntu22.04", id="image-cuda-tag"),
        pytest.param("ubuntu", id="image-no-tag"),
    ],
)
def test_image_job_is_named_and_aliased_as_wandb_names_it(image: str) -> None:
    name, aliases = wandb_image_job(image)
    made = cli_json("job", "create", "image", image, "-E", "true")
    assert made["name"] == name
    assert made["aliases"] == aliases
    for alias in aliases:  # the tag names the version, as -j NAME:TAG
        assert cli_json("job", "show", f"{name}:{alias}")["version"] == made["version"]


def test_the_default_main_py_must_be_in_the_code_as_a_given_script_must(
    code: Path, tmp_path: Path
) -> None:
    """Found by an adversarial QA pass: with no -E and no main.py, the version was made
    (and became latest) and every run of it failed 'command not found: main.py'. The
    default is checked as `-E 'python missing.py'` is: refused, nothing written."""
    empty = make_script(tmp_path / "nomain", "train.py", "print(1)\n").parent
    for entry in ([], ["-E", "main.py"]):
        proc = cli("job", "create", "code", str(empty), "-n", "nomain", *entry)
        assert proc.returncode == 1
        assert proc.stderr == (f"launchctl: error: entry point file main.py not found in {empty}\n")
    assert cli("job", "show", "nomain").returncode == 1
