"""What a slurm queue may say (issue 14): sbatch options from an allow-list, each value one
plain token, extra #SBATCH lines from their own allow-list, ceilings held. No cluster needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launchctl.guardrails import Limits
from launchctl.runners.slurm_options import OptionError, sbatch_args
from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"partition": "debug --uid=0"}, "slurm option partition has an unusable value"),
        ({"partition": "a\n#SBATCH --uid=0"}, "slurm option partition has an unusable value"),
        ({"account": "--uid=0"}, "not starting with -"),
        ({"sbatch": ["--uid=0"]}, "slurm: sbatch line --uid is not allowed"),
        ({"sbatch": ["--output=/etc/passwd"]}, "slurm: sbatch line --output is not allowed"),
        ({"sbatch": "--exclusive"}, "sbatch must be a list"),
        ({"container": "podman"}, "container must be one of docker, apptainer, enroot"),
        ({"shared_dir": "relative/dir"}, "shared_dir must be an absolute path"),
        ({"gpus": 2}, "Unsupported resource_args.slurm option 'gpus'"),
        ({"chdir": "/"}, "Unsupported resource_args.slurm option 'chdir'"),
    ],
)
def test_a_queue_config_slurm_cannot_run_is_refused_in_one_line(
    home: Path, options: dict[str, object], message: str
) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    config = json.dumps({"resource_args": {"slurm": options}})
    proc = cli("queue", "create", "hpc", "-r", "slurm", "--config", config)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert table_counts(home) == before


def test_a_good_slurm_queue_is_kept_as_written() -> None:
    options = {
        "partition": "debug",
        "time": "0-02:00:00",
        "mem": "{{mem}}",
        "gres": "gpu:a100:2",
        "sbatch": ["--exclusive", "#SBATCH --mail-type=END"],
    }
    config = {
        "resource_args": {"slurm": options},
        "template_variables": {"mem": {"type": "string", "default": "4G"}},
    }
    cli("queue", "create", "hpc", "-r", "slurm", "--config", json.dumps(config), check=True)
    assert cli_json("queue", "show", "hpc")["config"]["resource_args"]["slurm"] == options


def test_options_become_sbatch_arguments_held_to_the_ceilings() -> None:
    assert sbatch_args({"partition": "gpu", "nodes": 2, "sbatch": ["--exclusive"]}, Limits()) == [
        "--nodes=2",
        "--partition=gpu",
        "--exclusive",
    ]
    # A ceiling with no ask becomes the job's option.
    held = sbatch_args({}, Limits(cpus=2, memory=1 << 30, max_run_time=90))
    assert held == ["--cpus-per-task=2", "--mem=1024M", "--time=2"]
    with pytest.raises(OptionError, match="asks for time 2:00:00, above its limit of 3600s"):
        sbatch_args({"time": "2:00:00"}, Limits(max_run_time=3600))
    with pytest.raises(OptionError, match="asks for mem 8G, above the queue's ceiling of 4096M"):
        sbatch_args({"mem": "8G"}, Limits(memory=4 << 30))
    with pytest.raises(OptionError, match="asks for 4 CPUs"):
        sbatch_args({"cpus-per-task": 2, "ntasks": 2}, Limits(cpus=2))


def test_a_template_value_that_would_add_an_option_fails_the_run_at_stage_agent(
    store: Store, start_agent: StartAgent, tmp_path: Path
) -> None:
    """A launcher's ``--set-var`` value is checked once rendered, before anything is submitted."""
    config = {
        "resource_args": {"slurm": {"partition": "{{part}}"}},
        "template_variables": {"part": {"type": "string", "default": "debug"}},
    }
    cli("queue", "create", "hpc", "-r", "slurm", "--config", json.dumps(config), check=True)
    run_id = cli(
        "launch",
        "-q",
        "hpc",
        "-u",
        str(make_script(tmp_path / "c", "main.py", "").parent),
        "-E",
        "true",
        "--set-var",
        "part=debug -x",
        check=True,
    ).stdout.strip()
    start_agent("-q", "hpc")
    wait_for(lambda: store.runs.state(run_id) == "failed", what="the run to fail")
    run = cli_json("runs", "show", run_id)
    assert run["stage"] == "agent"
    assert "the run breaks its queue's rules: slurm option partition" in run["reason"]
