"""W&B sweep configs (issue 15): read as W&B reads them, refused where W&B refuses them.

W&B's own validator (the ``sweeps`` package, W&B's sweep engine, whose schema W&B's
local controller applies) is the oracle: every parameter form below is accepted here
exactly when W&B finds nothing wrong with it.
"""

from __future__ import annotations

import functools
import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from launchctl.errors import ConfigError
from launchctl.sweeps import command, config
from tests.conftest import EXAMPLES, cli, cli_json, table_counts

HELLO = str(EXAMPLES / "hello")

# The launch sweep config of W&B's "Sweeps on Launch" page, unchanged
# (https://docs.wandb.ai/guides/launch/sweeps-on-launch, "Create a sweep with a W&B
# standard scheduler", CLI tab): its job's name has spaces.
DOCS_LAUNCH_SWEEP = """\
# launch-sweep-config.yaml

job: 'wandb/jobs/Hello World 2:latest'
description: sweep examples using launch jobs

method: bayes
metric:
  goal: minimize
  name: loss_metric
parameters:
  learning_rate:
    max: 0.02
    min: 0
    distribution: uniform
  epochs:
    max: 20
    min: 0
    distribution: int_uniform

# Optional scheduler parameters:

# scheduler:
#   num_workers: 1  # concurrent sweep runs
#   docker_image: <base image for the scheduler>
#   resource: <ie. local-container...>
#   resource_args:  # resource arguments passed to runs
#     env:
#         - WANDB_API_KEY

# Optional Launch Params
# launch:
#    registry: <registry for image pulling>
"""

# The example of W&B's "Define a sweep configuration" page
# (https://docs.wandb.ai/guides/sweeps/define-sweep-configuration, "Basic structure"):
# a sweep for `wandb sweep`, with a program and no job.
DOCS_BASIC = """\
program: train.py
name: sweepdemo
method: bayes
metric:
  goal: minimize
  name: validation_loss
parameters:
  learning_rate:
    min: 0.0001
    max: 0.1
  batch_size:
    values: [16, 32, 64]
  epochs:
    values: [5, 10, 15]
  optimizer:
    values: ["adam", "sgd"]
"""


# Two of the example configs of W&B's sweep engine (github.com/wandb/sweeps,
# examples/local-controller/sweep-local-hyperband.yaml and
# examples/nested-params/sweep-nested-cli.yaml), their keys and values unchanged (their
# comments left out): `wandb sweep` configs, so a launch sweep adds the job to run.
ENGINE_HYPERBAND = """\
description: sweep examples using local controller and hyperband
program: train-local.py
project: sweeps-examples
method: grid
controller:
  type: local
metric:
  name: loss_metric
  goal: minimize
early_terminate:
  type: hyperband
  max_iter: 10
  s: 2
  eta: 3
parameters:
  epochs:
    value: 20
  variance:
    value: 5
  sleep:
    value: 2
  base:
    values: [10,15,20]
  increment:
    values: [0.1,0.2,0.3]
  direction:
    values: [-1,0.1,1]
"""
ENGINE_NESTED = """\
description: sweep examples with nested parameters using cli
program: train-nested-cli.py
project: sweeps-examples
method: grid
metric:
  name: loss
  goal: minimize
parameters:
  batch_size:
    values: [32, 64]
  optimizer:
    parameters:
      lr:
        values: [0.001, 0.0001]
      nadam:
        parameters:
          beta:
            values: [0.9, 0.95]
"""


@pytest.fixture
def queue(tmp_path: Path) -> str:
    """A local-process queue 'q' and a job 'trainer' of the current user."""
    cli("queue", "create", "q", "--resource", "local-process", check=True)
    cli("job", "create", "code", HELLO, "-n", "trainer", "-E", "python train.py", check=True)
    return "q"


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def refused(home: Path, *args: str, says: str, env: dict[str, str] | None = None) -> str:
    before = table_counts(home)
    proc = cli(*args, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("launchctl: error: "), proc.stderr
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert table_counts(home) == before
    return proc.stderr


def test_the_docs_launch_sweep_config_is_accepted_unchanged(tmp_path: Path, home: Path) -> None:
    # W&B's job 'wandb/jobs/Hello World 2' is launchctl's wandb/jobs/Hello_World_2 (the name
    # `job create` suggests for it: job names hold no spaces).
    cli("team", "create", "wandb", check=True)
    cli("queue", "create", "q", "--resource", "local-process", "--entity", "wandb", check=True)
    cli("job", "create", "code", HELLO, "-n", "Hello_World_2", "-e", "wandb", "-p", "jobs",
        "-E", "python train.py", check=True)  # fmt: skip
    path = write(tmp_path, DOCS_LAUNCH_SWEEP)
    proc = cli("launch-sweep", path, "--queue", "q", "--entity", "wandb", "--project", "jobs")
    assert proc.returncode == 0, proc.stderr
    sweep_id = proc.stdout.strip()
    assert f"created sweep {sweep_id} (bayes) on queue q: up to 8 trials at a time" in proc.stderr
    assert "is launchctl's job wandb/jobs/Hello_World_2:latest" in proc.stderr
    [row] = cli_json("sweep", "list")
    assert row["id"] == sweep_id and row["state"] == "running"
    assert (row["method"], row["metric_name"], row["metric_goal"]) == ("bayes", "loss_metric",
                                                                      "minimize")  # fmt: skip
    assert row["num_workers"] == 8  # W&B's scheduler's default
    assert (row["entity"], row["project"]) == ("wandb", "jobs")
    assert row["config"]["job"] == "wandb/jobs/Hello World 2:latest"  # stored as given
    assert row["config"]["parameters"]["epochs"] == {"max": 20, "min": 0,
                                                     "distribution": "int_uniform"}  # fmt: skip


def test_the_docs_basic_config_is_refused_as_w_and_b_s_launch_sweep_refuses_it(
    tmp_path: Path, home: Path, queue: str
) -> None:
    """A `wandb sweep` config names a program, not a job: launch-sweep needs one or an image."""
    path = write(tmp_path, DOCS_BASIC)
    refused(home, "launch-sweep", path, "-q", queue,
            says="no 'job' nor 'image_uri' top-level key found")  # fmt: skip
    # With the job named, the same config is a launch sweep.
    path = write(tmp_path, "job: trainer\n" + DOCS_BASIC, "with-job.yaml")
    cli("launch-sweep", path, "-q", queue, check=True)


def test_the_scheduler_and_launch_blocks_are_kept_apart(tmp_path: Path, queue: str) -> None:
    path = write(
        tmp_path,
        """\
        job: trainer
        method: random
        run_cap: 12
        metric: {name: val_loss}
        parameters:
          lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
          batch_size: {values: [16, 32]}
        scheduler:
          num_workers: 3
          settings: {sampler: {type: RandomSampler, args: {seed: 1}}}
        launch:
          queue: q
          priority: high
    """,
    )
    row = cli_json("launch-sweep", path)  # the queue from launch.queue, as W&B's
    assert row["queue_name"] == "q" and row["num_workers"] == 3 and row["run_cap"] == 12
    assert "scheduler" not in row["config"] and "launch" not in row["config"]
    assert row["scheduler"] == {"num_workers": 3,
                                "settings": {"sampler": {"type": "RandomSampler",
                                                         "args": {"seed": 1}}}}  # fmt: skip
    assert row["launch"] == {"queue": "q", "priority": "high"}
    proc = cli("launch-sweep", path)
    assert "not used yet" not in proc.stderr  # the sampler is applied (issue 15, W4)
    assert row["metric_goal"] == "minimize"  # W&B's default goal


def test_hyperband_nested_parameters_and_every_distribution_are_accepted(
    tmp_path: Path, queue: str
) -> None:
    params = {name: spec for name, spec in ACCEPTED.items()}
    params["optimizer"] = {"parameters": {"name": {"values": ["adam", "sgd"]},
                                          "momentum": {"min": 0.5, "max": 0.99}}}  # fmt: skip
    path = write(tmp_path, json.dumps({
        "job": "trainer", "method": "random", "metric": {"name": "acc", "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 2},
        "parameters": params,
    }), "sweep.json")  # fmt: skip
    proc = cli("launch-sweep", path, "-q", queue, "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["config"]["early_terminate"]["min_iter"] == 3
    assert "not applied" not in proc.stderr  # hyperband stops trials (test_early_terminate)
    # W&B's deprecated forms are taken with W&B's warning, once the sweep is stored.
    assert "warning: inv_log_uniform uses inv_log_uniform, where min/max are base-e" in proc.stderr


# One parameter of each distribution, in W&B's forms.
ACCEPTED: dict[str, Any] = {
    "constant": {"value": 3},
    "constant_explicit": {"distribution": "constant", "value": "x"},
    "categorical": {"values": [1, "a", None, True]},
    "categorical_w_probabilities": {"values": [1, 2], "probabilities": [0.25, 0.75]},
    "int_uniform": {"min": 1, "max": 8},
    "uniform": {"min": 0.0, "max": 1.0},
    "uniform_mixed": {"min": 0, "max": 0.5},
    "q_uniform": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
    "log_uniform": {"distribution": "log_uniform", "min": -9, "max": -1},
    "log_uniform_values": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "q_log_uniform": {"distribution": "q_log_uniform", "min": 0, "max": 5, "q": 1},
    "q_log_uniform_values": {"distribution": "q_log_uniform_values", "min": 1, "max": 256,
                             "q": 8},
    "inv_log_uniform": {"distribution": "inv_log_uniform", "min": 0, "max": 3},
    "inv_log_uniform_values": {"distribution": "inv_log_uniform_values", "min": 1, "max": 100},
    "normal": {"distribution": "normal", "mu": 0, "sigma": 2},
    "q_normal": {"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 1},
    "log_normal": {"distribution": "log_normal", "mu": 0, "sigma": 1},
    "q_log_normal": {"distribution": "q_log_normal", "mu": 1, "sigma": 0.5, "q": 2},
    "beta": {"distribution": "beta", "a": 2, "b": 5},
    "q_beta": {"distribution": "q_beta", "a": 2, "b": 5, "q": 0.1},
    "normal_defaults": {"distribution": "normal"},
}  # fmt: skip

MALFORMED: dict[str, Any] = {
    "empty": {},
    "values_empty": {"values": []},
    "values_not_list": {"values": 3},
    "min_only": {"min": 1},
    "min_above_max": {"min": 5, "max": 1},
    "min_equals_max": {"min": 1.0, "max": 1.0},
    "unknown_distribution": {"distribution": "poisson", "min": 0, "max": 1},
    "unknown_key": {"values": [1], "step": 2},
    "int_uniform_floats": {"distribution": "int_uniform", "min": 0.5, "max": 3.5},
    "values_v2_nonpositive": {"distribution": "log_uniform_values", "min": 0, "max": 1},
    "q_zero": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0},
    "sigma_negative": {"distribution": "normal", "mu": 0, "sigma": -1},
    "beta_negative": {"distribution": "beta", "a": -1},
    "probabilities_sum": {"values": [1, 2], "probabilities": [0.5, 0.6]},
    "probabilities_length": {"values": [1, 2, 3], "probabilities": [0.5, 0.5]},
    "min_text": {"min": "a", "max": "b"},
    "not_a_mapping": [1, 2],
    "normal_without_distribution": {"mu": 0, "sigma": 1},
    "nested_with_values": {"parameters": {"a": {"value": 1}}, "values": [1]},
}  # fmt: skip


@functools.cache
def _wandb_sweeps() -> Any:
    """W&B's sweep engine (the ``sweeps`` package), loaded under another name: in this test
    process the name ``sweeps`` is this folder's package."""
    import importlib.metadata
    import importlib.util

    try:
        dist = importlib.metadata.distribution("sweeps")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("W&B's sweeps package (the test extra) is not installed")
    init = Path(str(dist.locate_file("sweeps/__init__.py")))
    spec = importlib.util.spec_from_file_location(
        "wandb_sweeps", init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wandb_sweeps"] = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


def _wandb_violations(cfg: dict[str, Any]) -> list[str]:
    """W&B's sweep engine's verdict (its deprecation notes aside: those are warnings)."""
    engine = _wandb_sweeps()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = engine.schema_violations_from_proposed_config(cfg)
        except ValueError as exc:  # W&B raises for a parameter that is not a mapping
            return [str(exc)]
    return [v for v in found if "base-e exponents" not in v]


@pytest.mark.parametrize("name", sorted(ACCEPTED) + sorted(MALFORMED))
def test_each_parameter_form_is_judged_as_w_and_b_judges_it(name: str) -> None:
    spec = ACCEPTED.get(name, MALFORMED.get(name))
    cfg = {"job": "trainer", "method": "random", "parameters": {"p": spec}}
    oracle = _wandb_violations(cfg)
    assert (name in ACCEPTED) == (not oracle), f"W&B says {oracle} of {spec}: fix the table"
    if name in ACCEPTED:
        parsed = config.parse(cfg)
        assert parsed.parameters["p"]["distribution"] in config.DISTRIBUTIONS
    else:
        with pytest.raises(ConfigError, match="sweep config: "):
            config.parse(cfg)


@pytest.mark.parametrize(
    "extra",
    [{"method": "annealing"}, {"method": None}, {"run_cap": 0}, {"run_cap": "ten"},
     {"metric": {"name": "loss", "goal": "lower"}}, {"metric": {"goal": "minimize"}},
     {"early_terminate": {"type": "hyperband"}}, {"early_terminate": {"type": "median"}},
     {"early_terminate": {"type": "hyperband", "min_iter": 0}},
     {"early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 1}},
     {"learning_rate": 0.1}, {"command": "python train.py"},
     {"parameters": {"1lr": {"values": [1]}}}, {"parameters": {}}],
    ids=lambda extra: json.dumps(extra)[:40],
)  # fmt: skip
def test_what_w_and_b_s_schema_refuses_is_refused(extra: dict[str, Any]) -> None:
    cfg = {"job": "trainer", "method": "random", "parameters": {"p": {"values": [1]}}}
    cfg.update(extra)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    assert _wandb_violations(cfg), f"W&B accepts {extra}: not a refusal to test"
    with pytest.raises(ConfigError):
        config.parse(cfg)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("method: grid\nparameters: {lr: {values: [1]}}\nimage_uri: python:3.11\n",
         "has both 'job' and 'image_uri'"),
        ("method: annealing\nparameters: {lr: {values: [1]}}\n", "unknown method 'annealing'"),
        ("method: random\nparameters: {lr: {min: 1}}\n",
         "sweep config: parameters.lr is malformed"),
        ("method: random\nmetric: {name: loss, goal: lower}\nparameters: {lr: {values: [1]}}\n",
         "metric goal must be minimize or maximize, not 'lower'"),
        ("method: grid\nparameters: {lr: {min: 0.1, max: 1.0}}\n",
         "grid search needs every parameter discrete"),
        ("method: bayes\nparameters: {lr: {min: 0.1, max: 1.0}}\n", "method bayes needs a metric"),
        ("method: random\nrun_cap: 0\nparameters: {lr: {values: [1]}}\n",
         "run_cap must be a whole number above 0"),
        ("method: random\nscheduler: {num_workers: 0}\nparameters: {lr: {values: [1]}}\n",
         "scheduler.num_workers must be a whole number from 1 to 1024, not 0"),
        ("method: random\nscheduler: {num_workers: many}\nparameters: {lr: {values: [1]}}\n",
         "scheduler.num_workers must be a whole number"),
        ("method: custom\nparameters: {lr: {values: [1]}}\n", "method custom needs a custom"),
        ("method: random\nscheduler: {job: 'wandb/sweep-jobs/job-optuna-sweep-scheduler:latest'}"
         "\nparameters: {lr: {values: [1]}}\n", "scheduler.job (a custom scheduler job)"),
        ("method: random\nlearning_rate: 0.1\nparameters: {lr: {values: [1]}}\n",
         "unknown key 'learning_rate'"),
        ("method: random\ncommand: [python, train.py, '${args_json_file}']\n"
         "parameters: {lr: {values: [1]}}\n", "${args_json_file} is not supported"),
        ("method: random\ncommand: ['${env}', '${interpreter}', '${program}', '${args}']\n"
         "parameters: {lr: {values: [1]}}\n", "command uses ${program} but the config has no"),
        ("method: random\ncommand: [python, train.py, '${arguments}']\n"
         "parameters: {lr: {values: [1]}}\n", "command has an unknown macro '${arguments}'"),
        ("method: random\ncommand: [python, train.py, '--lr=${args}']\n"
         "parameters: {lr: {values: [1]}}\n", "must be a whole word of command"),
    ],
)  # fmt: skip
def test_a_bad_config_is_one_line_and_stores_nothing(
    tmp_path: Path, home: Path, queue: str, body: str, says: str
) -> None:
    path = write(tmp_path, "job: trainer\n" + body)
    refused(home, "launch-sweep", path, "-q", queue, says=says)


def test_what_cannot_be_launched_is_refused_before_anything_is_stored(
    tmp_path: Path, home: Path, queue: str
) -> None:
    path = write(tmp_path, "job: trainer\nmethod: random\nparameters: {lr: {values: [1]}}\n")
    refused(home, "launch-sweep", path, says="launch-sweeps require setting a 'queue'")
    refused(home, "launch-sweep", path, "-q", "nope", says="queue 'nope'")
    refused(home, "launch-sweep", path, "-q", queue, "-e", "a b", says="invalid entity name 'a b'")
    refused(home, "launch-sweep", path, "-q", queue, "-p", "../x", says="invalid project name")
    refused(home, "sweep", "create", path, "-q", queue, "--prior-run", "abc", says="--prior-run")
    path = write(tmp_path, "job: nosuchjob\nmethod: random\nparameters: {lr: {values: [1]}}\n")
    refused(home, "launch-sweep", path, "-q", queue, says="nosuchjob")
    path = write(tmp_path, "image_uri: python:3.11\nmethod: random\nparameters: {a: {value: 1}}\n")
    refused(home, "launch-sweep", path, "-q", queue, says="cannot run a docker image")
    path = write(tmp_path, "image_uri: 'bad image!!'\nmethod: random\nparameters: {a: {value: 1}}")
    refused(home, "launch-sweep", path, "-q", queue, says="not an image reference (holds white")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    refused(home, "launch-sweep", str(tmp_path / "list.yaml"), "-q", queue,
            says="must be a JSON/YAML object")  # fmt: skip
    refused(home, "launch-sweep", "-q", queue, "--project", "p", says="CONFIG")


def test_a_trial_command_keeps_each_value_one_word(tmp_path: Path) -> None:
    """A parameter value is data: one word of the argument list, no shell, no macro."""
    params = {"lr": 0.1, "name": "$(rm -rf ~)", "tag": "; reboot", "m": "${env}", "flag": False,
              "opt": {"lr": 1}}  # fmt: skip
    words = command.build(["${env}", "${interpreter}", "${program}", "${args}"], params,
                          program="train.py")  # fmt: skip
    assert words == ["/usr/bin/env", "python", "train.py", "--lr=0.1", "--name=$(rm -rf ~)",
                     "--tag=; reboot", "--m=${env}", "--flag=False", "--opt={'lr': 1}"]  # fmt: skip
    assert command.build(["python", "t.py", "${args_no_hyphens}"], {"a": 1}) == [
        "python", "t.py", "a=1"]  # fmt: skip
    assert command.build(["x", "${args_json}"], params)[1] == json.dumps(params)
    assert command.build(["x", "${args_no_boolean_flags}"], {"a": True, "b": False}) == ["x", "--a"]
    assert command.build(["x", "${args_no_equals}"], {"a": "-v"}) == ["x", "--a", "-v"]
    assert command.build(None, params) is None  # the job's own entry point


def test_envvar_macros_are_filled_from_the_creator_s_environment(
    tmp_path: Path, queue: str
) -> None:
    path = write(
        tmp_path,
        """\
        job: trainer
        method: grid
        command: [python, train.py, '--data=${envvar:DATA_DIR}/x', '${args}']
        parameters: {lr: {values: [0.1, 0.2]}}
    """,
    )
    proc = cli("launch-sweep", path, "-q", queue, "--json", env={"DATA_DIR": "/data"})
    row = json.loads(proc.stdout)
    assert row["config"]["command"] == ["python", "train.py", "--data=/data/x", "${args}"]
    assert "the sweep's command replaces the job's entry point" in proc.stderr


@pytest.mark.parametrize("text", [ENGINE_HYPERBAND, ENGINE_NESTED], ids=["hyperband", "nested"])
def test_w_and_b_s_engine_examples_are_accepted_with_a_job(
    tmp_path: Path, queue: str, text: str
) -> None:
    import yaml

    assert not _wandb_violations(yaml.safe_load(text))  # W&B's engine takes them as they are
    path = write(tmp_path, "job: trainer\n" + text)
    row = cli_json("launch-sweep", path, "-q", queue)
    assert row["config"] == {"job": "trainer", **yaml.safe_load(text)}
    assert row["project"] == "sweeps-examples" and row["method"] == "grid"
