"""W&B's launch agent inputs (issue 11, "Agent"): its flags, its config file, its precedence.

Each case is an input W&B documents or its code reads, with W&B's verdict. Where W&B has a
validator (``AgentConfig``, wandb/sdk/launch/agent/config.py) the case asks it too, as an
oracle, and launchctl must agree. Sources:
  DOCS_AGENT  https://docs.wandb.ai/guides/launch/run-agent ("Advanced agent setup": builders,
              registries, agent configuration)
  DOCS_DOCKER https://docs.wandb.ai/guides/launch/setup-launch-docker ("Configure an agent")
  CLI         wandb/cli/cli.py, launch_agent (its options)
  RESOLVE     wandb/sdk/launch/_launch.py, resolve_agent_config (file, env, flags)
  MODEL       wandb/sdk/launch/agent/config.py, AgentConfig
  NOOP        wandb/sdk/launch/builder/noop.py (build_image raises: it never builds)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUSYBOX, cli, cli_json, make_script, table_counts

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo"


@pytest.fixture
def agent_home(ready: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated store and user HOME (for W&B's default config file), no W&B env, and a
    local-process queue ``q`` of the user's own entity."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    for name in ("WANDB_ENTITY", "WANDB_LAUNCH_MAX_JOBS"):
        monkeypatch.delenv(name, raising=False)
    cli("queue", "create", "q", "-r", "local-process", check=True)
    return user_home


def wandb_verdict(config: dict[str, Any]) -> bool:
    """W&B's own AgentConfig on ``config`` (an entity added when absent: W&B fills in the
    logged-in user's); True when W&B accepts it."""
    from wandb.sdk.launch.agent.config import AgentConfig, ValidationError

    try:
        AgentConfig(**{"entity": "me", **config})
    except ValidationError:
        return False
    return True


def _queued_run(tmp_path: Path, queue: str = "q") -> str:
    make_script(tmp_path / "code", "main.py", "print('ran')\n")
    proc = cli("launch", "-q", queue, "-u", str(tmp_path / "code"), "-E", "python main.py",
               check=True)  # fmt: skip
    return proc.stdout.strip()


# (id, YAML text, what W&B's AgentConfig says, a line launchctl must print when it accepts, or a
# word of its one-line refusal)
FILE_CASES = [
    # DOCS_DOCKER: the page's launch-config.yaml ("max_jobs: -1 ... queues: - <queue>")
    ("docs-docker-example", "max_jobs: -1\nqueues:\n  - q\n", True, "max_jobs: unlimited"),
    # MODEL: max_jobs is a pydantic int, so the text "4" is read as 4
    ("max-jobs-text", 'queues: [q]\nmax_jobs: "4"\n', True, "max_jobs: 4 ("),
    # MODEL: a fraction is no int
    ("max-jobs-fraction", "queues: [q]\nmax_jobs: 4.5\n", False, "max_jobs"),
    # DOCS_AGENT "Builders": builder.type docker
    ("builder-docker", "queues: [q]\nbuilder:\n  type: docker\n", True, "builder: docker"),
    # DOCS_AGENT "Builders": kaniko is W&B's in-cluster builder; not used here, and said so
    (
        "builder-kaniko",
        "queues: [q]\nbuilder:\n  type: kaniko\n",
        True,
        "not used here: builder.type kaniko",
    ),
    # DOCS_DOCKER: "builder: type: noop" if you don't want the agent to build
    ("builder-noop", "queues: [q]\nbuilder:\n  type: noop\n", True, "never builds"),
    # MODEL: BuilderType is docker | kaniko | noop
    ("builder-unknown-type", "queues: [q]\nbuilder:\n  type: buildah\n", False, "builder.type"),
    # MODEL: TargetPlatform is linux/amd64 | linux/arm64
    (
        "builder-bad-platform",
        "queues: [q]\nbuilder:\n  platform: linux/riscv64\n",
        False,
        "builder.platform",
    ),
    # MODEL: build-context-store must be an S3, GCS or Azure blob URI
    (
        "builder-bad-context-store",
        "queues: [q]\nbuilder:\n  build-context-store: /tmp/ctx\n",
        False,
        "build-context-store",
    ),
    # DOCS_AGENT "Container registries": an ECR registry; no cloud login here, said once
    (
        "registry-ecr",
        f"queues: [q]\nregistry:\n  type: ecr\n  uri: {ECR}\n",
        True,
        "not used here: registry.type ecr",
    ),
    # MODEL: RegistryType is ecr | acr | gcr
    (
        "registry-unknown-type",
        "queues: [q]\nregistry:\n  type: dockerhub\n",
        False,
        "registry.type",
    ),
    # DOCS_AGENT "Cloud environment": aws with a region; no cloud here, said once
    (
        "environment-aws",
        "queues: [q]\nenvironment:\n  type: aws\n  region: us-east-1\n",
        True,
        "not used here: environment aws",
    ),
    # MODEL: EnvironmentType is aws | gcp | azure
    (
        "environment-unknown-type",
        "queues: [q]\nenvironment:\n  type: openstack\n  region: x\n",
        False,
        "environment.type",
    ),
    # MODEL: EnvironmentConfig.region is required (Field(...))
    ("environment-no-region", "queues: [q]\nenvironment:\n  type: gcp\n", False, "region"),
    # MODEL: extra="forbid"; RESOLVE reads a singular 'queue', but the model then refuses it
    ("singular-queue-key", "queue: q\n", False, "'queue'"),
    # MODEL: extra="forbid": a misspelt key is refused, naming it
    ("misspelt-key", "queues: [q]\nmax_job: 2\n", False, "'max_job'"),
    # MODEL: queues is a list of names; a bare string is refused
    ("queues-as-text", "queues: q\n", False, "queues"),
    # MODEL: entity is text
    ("entity-number", "queues: [q]\nentity: 5\n", False, "entity"),
    # MODEL: secure_mode is a bool (pydantic reads "yes" as true); the banner says it is on
    ("secure-mode", "queues: [q]\nsecure_mode: yes\n", True, "secure_mode: on"),
    # MODEL: a bool, so "sometimes" is refused
    ("secure-mode-not-bool", "queues: [q]\nsecure_mode: sometimes\n", False, "secure_mode"),
    # MODEL: verbosity and stopped_run_timeout are ints ("2" read as 2); the timeout is the
    # stop grace
    (
        "verbosity-and-timeout",
        'queues: [q]\nverbosity: "2"\nstopped_run_timeout: 30\n',
        True,
        "grace: 30 s",
    ),
    # MODEL: max_schedulers is an int; no sweep scheduler runs here, said so
    ("max-schedulers", "queues: [q]\nmax_schedulers: 2\n", True, "not used here: max_schedulers"),
]


@pytest.mark.parametrize(
    ("text", "wandb_accepts", "says"),
    [pytest.param(t, ok, says, id=i) for i, t, ok, says in FILE_CASES],
)
def test_agent_config_file_is_checked_by_wandbs_rules(
    agent_home: Path, ready: Path, tmp_path: Path, text: str, wandb_accepts: bool, says: str
) -> None:
    import yaml

    assert wandb_verdict(yaml.safe_load(text)) is wandb_accepts  # the oracle's verdict
    path = tmp_path / "launch-config.yaml"
    path.write_text(text)
    before = table_counts(ready)
    proc = cli("agent", "-c", str(path), "--burst", timeout=60)
    assert "Traceback" not in proc.stderr
    if wandb_accepts:
        assert proc.returncode == 0, proc.stderr
        assert says in proc.stderr, proc.stderr
        if "not used here" in says:  # said once, not on every pass
            assert proc.stderr.count(says) == 1
    else:
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], proc.stderr
        assert table_counts(ready) == before


def test_default_config_file_is_read_and_named(agent_home: Path, tmp_path: Path) -> None:
    # RESOLVE: without -c, W&B reads ~/.config/wandb/launch-config.yaml (LAUNCH_CONFIG_FILE,
    # wandb/sdk/launch/utils.py) when it is a file. The run queued there runs.
    run_id = _queued_run(tmp_path)
    path = agent_home / ".config" / "wandb" / "launch-config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("queues:\n  - q\nmax_jobs: 2\n")
    proc = cli("agent", "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"config file: {path}" in proc.stderr
    assert "max_jobs: 2 (agent config ~/.config/wandb/launch-config.yaml)" in proc.stderr
    assert cli_json("runs", "show", run_id)["state"] == "finished"


def test_default_config_file_with_a_tab_is_one_line(agent_home: Path, ready: Path) -> None:
    # DOCS_DOCKER: the page's example indents the queue list with a TAB; W&B's
    # yaml.safe_load fails on it (RESOLVE: "Invalid launch agent config"). One line, naming it.
    path = agent_home / ".config" / "wandb" / "launch-config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("max_jobs: 2\nqueues:\n\t- q\n")
    before = table_counts(ready)
    proc = cli("agent", "--burst")
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "error: agent config ~/.config/wandb/launch-config.yaml: line 3 is indented with a tab;"
        " YAML needs spaces"
    ) or proc.stderr.strip().endswith("line 3 is indented with a tab; YAML needs spaces")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert table_counts(ready) == before


@pytest.mark.parametrize(
    ("env", "flags", "expect"),
    [
        # RESOLVE: WANDB_LAUNCH_MAX_JOBS over the file's max_jobs
        pytest.param(
            {"WANDB_LAUNCH_MAX_JOBS": "3"},
            [],
            "max_jobs: 3 (WANDB_LAUNCH_MAX_JOBS)",
            id="env-over-file",
        ),
        # RESOLVE: --max-jobs over WANDB_LAUNCH_MAX_JOBS
        pytest.param(
            {"WANDB_LAUNCH_MAX_JOBS": "3"},
            ["-j", "4"],
            "max_jobs: 4 (command line)",
            id="flag-over-env",
        ),
        # RESOLVE: with neither, the file's
        pytest.param({}, [], "max_jobs: 2 (agent config", id="file-over-default"),
    ],
)
def test_precedence_is_wandbs(
    agent_home: Path, tmp_path: Path, env: dict[str, str], flags: list[str], expect: str
) -> None:
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues: [q]\nmax_jobs: 2\n")
    proc = cli("agent", "-c", str(path), *flags, "--burst", env=env)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stderr


def test_queue_flag_replaces_the_files_queues(agent_home: Path, tmp_path: Path) -> None:
    # RESOLVE: `if queues: resolved_config["queues"] = list(queues)`: -q replaces the file's
    # list. The file names a queue that does not exist; with -q q it is never looked up.
    run_id = _queued_run(tmp_path)
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues: [nowhere]\n")
    proc = cli("agent", "-c", str(path), "-q", "q", "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "queues: q (command line)" in proc.stderr
    assert cli_json("runs", "show", run_id)["state"] == "finished"


@pytest.mark.parametrize(
    ("env", "flags", "ok"),
    [
        # CLI: -e ENTITY, the agent's entity; RESOLVE: -e over WANDB_ENTITY
        pytest.param({"WANDB_ENTITY": "someone-else"}, ["-e", "OWN"], True, id="flag-own"),
        # CLI -e naming an entity that does not own the queue: refused in one line
        pytest.param({}, ["-e", "someone-else"], False, id="flag-other"),
        # RESOLVE: WANDB_ENTITY is the agent's entity when -e is not given
        pytest.param({"WANDB_ENTITY": "someone-else"}, [], False, id="env-other"),
    ],
)
def test_entity_owns_the_queues(
    agent_home: Path, ready: Path, env: dict[str, str], flags: list[str], ok: bool
) -> None:
    own = cli_json("queue", "show", "q")["entity"]
    flags = [own if f == "OWN" else f for f in flags]
    before = table_counts(ready)
    proc = cli("agent", "-q", "q", *flags, "--burst", env=env)
    assert "Traceback" not in proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert f"entity: {own} (command line)" in proc.stderr
    else:
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"belongs to entity '{own}'" in lines[0], proc.stderr
        assert table_counts(ready) == before


def test_log_file_gets_the_agents_lines(agent_home: Path, tmp_path: Path) -> None:
    # CLI: -l/--log-file, "Destination for internal agent logs"; here the agent's own lines.
    run_id = _queued_run(tmp_path)
    log = tmp_path / "agent.log"
    proc = cli("agent", "-q", "q", "-l", str(log), "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert "serving q" in text and f"started run {run_id}" in text and "stopped" in text
    assert (log.stat().st_mode & 0o077) == 0


def test_verbose_counts(agent_home: Path) -> None:
    # CLI: -v is a count ("@click.option('--verbose', '-v', count=True)"); -vv: level 2
    proc = cli("agent", "-q", "q", "-vv", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert "verbosity 2" in proc.stderr and "builder settings:" in proc.stderr
    quiet = cli("agent", "-q", "q", "--burst")
    assert "builder settings:" not in quiet.stderr


def test_max_schedulers_flag_is_taken_and_said(agent_home: Path) -> None:
    # MODEL: max_schedulers (sweep schedulers); W&B's agent reads it; none run here: the
    # agent schedules its queues' sweeps itself (no scheduler jobs), and says so
    proc = cli("agent", "-q", "q", "--max-schedulers", "2", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert (
        "not used here: max_schedulers 2 (command line): this agent schedules every sweep of"
        " its queues itself, with no scheduler jobs to count"
    ) in proc.stderr


def test_noop_builder_image_job_still_runs(agent_home: Path, docker: Any, tmp_path: Path) -> None:
    # NOOP: the noop builder refuses to build, but "Jobs sourced from Docker images do not"
    # need a builder (its message): an image run works.
    cli("queue", "create", "c", "-r", "local-container", check=True)
    run_id = cli("launch", "-q", "c", "-d", BUSYBOX, "-E", "echo hi", check=True).stdout.strip()
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues: [c]\nbuilder:\n  type: noop\n")
    proc = cli("agent", "-c", str(path), "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert cli_json("runs", "show", run_id)["state"] == "finished"


def test_noop_builder_code_job_fails_at_build(
    agent_home: Path, docker: Any, tmp_path: Path
) -> None:
    # NOOP: build_image raises "Attempted build with noop builder"; a code job in a container
    # needs a build, so the run fails at stage build saying the agent does not build.
    cli("queue", "create", "c", "-r", "local-container", check=True)
    run_id = _queued_run(tmp_path, "c")
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues: [c]\nbuilder:\n  type: noop\n")
    cli("agent", "-c", str(path), "--burst", timeout=120)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["stage"]) == ("failed", "build"), run
    assert "does not build" in run["reason"] and "builder.type noop" in run["reason"]


@pytest.mark.parametrize(
    ("env", "flags", "says"),
    [
        # RESOLVE: int(os.environ["WANDB_LAUNCH_MAX_JOBS"]); W&B raises ValueError on "four"
        # (a traceback); launchctl refuses in one line naming where the value came from.
        pytest.param({"WANDB_LAUNCH_MAX_JOBS": "four"}, [], "WANDB_LAUNCH_MAX_JOBS", id="env-text"),
        # agent.py _max_from_config: below -1 is refused ("-2")
        pytest.param({}, ["-j", "-2"], "max_jobs", id="flag-below-minus-one"),
        # A deliberate difference: W&B takes max_jobs 0 (an agent that never runs anything);
        # launchctl refuses it, as it always has.
        pytest.param({}, ["-j", "0"], "max_jobs", id="flag-zero"),
    ],
)
def test_bad_max_jobs_is_one_line(
    agent_home: Path, ready: Path, env: dict[str, str], flags: list[str], says: str
) -> None:
    before = table_counts(ready)
    proc = cli("agent", "-q", "q", *flags, "--burst", env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert table_counts(ready) == before


def test_log_file_dash_is_stdout(agent_home: Path) -> None:
    # CLI: -l "Use - for stdout"
    proc = cli("agent", "-q", "q", "-l", "-", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert "serving q" in proc.stdout and "serving q" in proc.stderr


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("# queues come from -q\n\n", id="comments-only"),
    ],
)
def test_an_empty_config_file_is_no_keys(agent_home: Path, tmp_path: Path, text: str) -> None:
    # RESOLVE: `launch_config = yaml.safe_load(f)`, `if launch_config is None: launch_config
    # = {}`: an empty file (or one of comments) is no keys, not an error.
    path = tmp_path / "launch-config.yaml"
    path.write_text(text)
    proc = cli("agent", "-c", str(path), "-q", "q", "--burst")
    assert proc.returncode == 0, proc.stderr
    assert f"config file: {path}" in proc.stderr


def test_secure_mode_refuses_an_entry_point_override(agent_home: Path, tmp_path: Path) -> None:
    # agent.py _assert_secure: in secure_mode a launch spec with overrides.entry_point is
    # refused; DOCS (AgentConfig's description): secure mode rejects runs that override the
    # entry point. A run of the job as created still runs.
    code = make_script(tmp_path / "code", "main.py", "print('ran')\n").parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "locked", check=True)
    plain = cli("launch", "-q", "q", "-j", "locked", check=True).stdout.strip()
    overridden = cli("launch", "-q", "q", "-j", "locked", "-E", "python -c 'print(1)'",
                     check=True).stdout.strip()  # fmt: skip
    # `launch -u DIR -E CMD` (the README's way) makes a job with CMD as its entry point and
    # records CMD as the run's: the same entry point is no override (a QA walk found
    # secure_mode refused it), nor is -E naming the job's own.
    same = cli("launch", "-q", "q", "-u", str(code), "-E", "python main.py",
               check=True).stdout.strip()  # fmt: skip
    own = cli("launch", "-q", "q", "-j", "locked", "-E", "python main.py",
              check=True).stdout.strip()  # fmt: skip
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues: [q]\nsecure_mode: true\n")
    proc = cli("agent", "-c", str(path), "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for ran in (plain, same, own):
        assert cli_json("runs", "show", ran)["state"] == "finished"
    run = cli_json("runs", "show", overridden)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert "secure_mode" in run["reason"] and "entry point" in run["reason"]
    # Without secure_mode the same override runs.
    again = cli("launch", "-q", "q", "-j", "locked", "-E", "python -c 'print(1)'",
                check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "q", "--burst", timeout=120, check=True)
    assert cli_json("runs", "show", again)["state"] == "finished"


@pytest.mark.parametrize(
    ("flags", "config", "says"),
    [
        # Found by an adversarial QA pass: each was an internal error, a hang or a
        # setting that could never work.
        (["-j", "9223372036854775808"], "", "max_jobs must be a positive number up to 100000"),
        (["--max-schedulers", "99999999999"], "", "max_schedulers must be a positive number"),
        (["--gpus", "0-2000000"], "", "--gpus: GPU indices go from 0 to 1023; got '0-2000000'"),
        (["--grace", "nan"], "", "grace must be a number of seconds, got nan"),
        (["--grace", "1e309"], "", "grace must be a number of seconds, got inf"),
        (["--poll", "inf"], "", "poll must be a number of seconds, got inf"),
        ([], 'env: {"A=B": x}', "env: 'A=B' cannot be an environment variable's name"),
        ([], 'env: {A: "x\\0y"}', "env: the value of 'A' holds a NUL character"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(
    agent_home: Path, ready: Path, tmp_path: Path, flags: list[str], config: str, says: str
) -> None:
    path = tmp_path / "launch-config.yaml"
    path.write_text(f"queues: [q]\n{config}\n")
    before = table_counts(ready)
    proc = cli("agent", "-c", str(path), *flags, "--burst", timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and says in proc.stderr, proc.stderr
    assert table_counts(ready) == before
