"""`launchctl launch`: W&B's flags, refusals that write nothing, direct and queued runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, cli, cli_json, make_script, table_counts

HELLO = str(EXAMPLES / "hello")


@pytest.fixture
def echo_job(tmp_path: Path) -> Path:
    """A job that prints its config, arguments and launch environment as JSON."""
    return make_script(
        tmp_path / "echo",
        "main.py",
        "import json, os, sys\n"
        "keys = ['WANDB_CONFIG', 'WANDB_RUN_ID', 'WANDB_NAME', 'WANDB_PROJECT', 'WANDB_ENTITY',\n"
        "        'WANDB_LAUNCH', 'WANDB_LAUNCH_QUEUE_NAME', 'LAUNCHCTL_RUN_ID', 'EXTRA']\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': {k: os.environ.get(k) for k in keys}}))\n"
        "sys.exit(int(os.environ.get('EXIT', '0')))\n",
    ).parent


def _echo(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_direct_launch_runs_now_and_prints_the_output_and_final_state() -> None:
    proc = cli("launch", "-u", HELLO, "-E", "python train.py", "--set", "lr=0.5", check=True)
    assert "starting with config {'lr': 0.5, 'epochs': 3}" in proc.stdout
    assert "finished (exit code 0)" in proc.stderr
    run = cli_json("runs", "list")[0]
    assert run["state"] == "finished" and run["queue_name"] is None


def test_set_values_are_typed_as_json_and_args_are_appended(echo_job: Path) -> None:
    proc = cli(
        "launch",
        "-u",
        str(echo_job),
        "-E",
        "python main.py --fixed",
        "--set",
        "lr=0.5",
        "--set",
        "layers=[1,2]",
        "--set",
        "name=resnet",
        "--set",
        "flag=true",
        "--args",
        "--epochs 3 'two words'",
        "-p",
        "proj",
        "-e",
        "team",
        "--name",
        "my-run",
        check=True,
    )
    seen = _echo(proc.stdout)
    assert json.loads(seen["env"]["WANDB_CONFIG"]) == {
        "lr": 0.5,
        "layers": [1, 2],
        "name": "resnet",
        "flag": True,
    }
    assert seen["argv"] == ["--fixed", "--epochs", "3", "two words"]
    run = cli_json("runs", "list")[0]
    env = seen["env"]
    assert env["WANDB_RUN_ID"] == env["LAUNCHCTL_RUN_ID"] == run["id"]
    assert (env["WANDB_NAME"], env["WANDB_PROJECT"], env["WANDB_ENTITY"]) == (
        "my-run",
        "proj",
        "team",
    )
    assert env["WANDB_LAUNCH"] == "True"
    assert env["WANDB_LAUNCH_QUEUE_NAME"] is None


def test_direct_launch_exit_status_is_the_runs(echo_job: Path) -> None:
    proc = cli("launch", "-u", str(echo_job), "-E", "python main.py", env={"EXIT": "3"})
    assert proc.returncode == 3
    assert "failed (stage run: exit code 3)" in proc.stderr
    run = cli_json("runs", "show", cli_json("runs", "list")[0]["id"])
    assert (run["state"], run["exit_code"], run["stage"]) == ("failed", 3, "run")


def test_a_launch_spec_file_is_merged_with_flags_winning(echo_job: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"uri: {echo_job}\n"
        "entry_point: [python, main.py]\n"
        "overrides:\n  run_config: {lr: 0.1, batch: 8}\n  args: [--from-spec]\n"
        "resource_args:\n  local-process:\n    env: {EXTRA: from-spec}\n"
    )
    proc = cli("launch", "-c", str(spec), "--set", "lr=0.9", check=True)
    seen = _echo(proc.stdout)
    assert json.loads(seen["env"]["WANDB_CONFIG"]) == {"lr": 0.9, "batch": 8}
    assert seen["argv"] == ["--from-spec"]
    assert seen["env"]["EXTRA"] == "from-spec"


def test_queued_launch_prints_the_run_id_and_json_prints_the_record() -> None:
    proc = cli(
        "launch", "-q", "default", "-u", HELLO, "-E", "python train.py", "-P", "high", check=True
    )
    run_id = proc.stdout.strip()
    assert len(run_id) == 8
    assert "no agent is serving queue default" in proc.stderr
    record = cli_json("launch", "-q", "default", "-j", "hello", "-P", "low")
    assert record["state"] == "queued" and record["priority"] == 3
    assert record["spec"]["job"] == f"{record['entity']}/hello:v0"  # ENTITY/NAME:vN
    first = cli_json("runs", "show", run_id)
    assert first["priority"] == 1 and first["queue_name"] == "default"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-j", "hello", "-d", "img:1"], 1, "cannot use both --job (-j) and --docker-image (-d)"),
        (["-u", HELLO, "-E", "python train.py", "-P", "high"], 1, "--priority (-P) needs --queue"),
        (["-u", HELLO], 1, "--uri (-u) needs --entry-point (-E)"),
        (["-p", "proj"], 1, "nothing to launch"),
        (["-q", "nope", "-u", HELLO, "-E", "python train.py"], 1, "queue 'nope' does not exist"),
        (["-u", "/no/such/dir", "-E", "python train.py"], 1, "does not exist"),
        (["-u", HELLO, "-E", "python train.py", "--set", "lr"], 1, "--set expects key=value"),
        (["-u", HELLO, "-E", "python train.py", "-c", "{bad"], 1, "not valid JSON"),
        (["-u", HELLO, "-E", "python train.py", "-c", '{"nonsense": 1}'], 1, "unknown key"),
        (["-q", "default", "-j", "hello", "-P", "urgent"], 1, "invalid priority 'urgent'"),
        (["-u", HELLO, "-E", "python missing.py"], 1, "entry point file missing.py not found"),
        (["-q", "default", "-d", "busybox"], 1, "cannot run a docker image"),
        (["-j", "hello:v9"], 1, "job 'hello' has no version v9"),
        (
            ["-u", HELLO, "-E", "python train.py", "-R", '{"local-process": {"shm-size": 2}}'],
            1,
            "Unsupported resource_args.local-process option 'shm-size'",
        ),
    ],
)
def test_refusals_give_one_clear_line_and_write_nothing(
    home: Path, args: list[str], code: int, message: str
) -> None:
    cli("job", "create", "code", HELLO, "-E", "python train.py", check=True)
    before = table_counts(home)
    proc = cli("launch", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert table_counts(home) == before


def test_rerun_queues_the_same_spec_with_changed_overrides() -> None:
    run_id = cli(
        "launch",
        "-q",
        "default",
        "-u",
        HELLO,
        "-E",
        "python train.py",
        "--set",
        "lr=0.2",
        "--set",
        "epochs=1",
        check=True,
    ).stdout.strip()
    new = cli_json("runs", "rerun", run_id, "--set", "lr=0.7")
    assert new["rerun_of"] == run_id and new["state"] == "queued"
    assert new["spec"]["overrides"]["run_config"] == {"lr": 0.7, "epochs": 1}
    assert new["spec"]["job"] == cli_json("runs", "show", run_id)["spec"]["job"]


def test_rerun_of_a_direct_launch_goes_to_the_default_queue() -> None:
    cli("launch", "-u", HELLO, "-E", "python train.py", check=True)
    direct = cli_json("runs", "list")[0]
    new = cli_json("runs", "rerun", direct["id"], "--set", "epochs=1", "-P", "high")
    assert (new["queue_name"], new["priority"], new["state"]) == ("default", 1, "queued")


def test_a_launch_cannot_refer_to_secrets_only_a_queue_can(home: Path) -> None:
    before = table_counts(home)
    proc = cli("launch", "-u", HELLO, "-E", "python train.py",
               "-R", '{"local-process": {"env": {"K": {"secret": "admin-key"}}}}')  # fmt: skip
    assert proc.returncode == 1
    assert "only a queue's config may refer to secrets" in proc.stderr
    assert table_counts(home) == before


def test_an_empty_queue_name_is_refused_not_taken_as_a_direct_launch(home: Path) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("launch", "-q", "", "-u", HELLO, "-E", "python train.py")
    assert proc.returncode == 1 and "--queue (-q) needs a value" in proc.stderr
    assert table_counts(home) == before


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_a_direct_launch_and_its_run(sig: str, tmp_path: Path, home: Path) -> None:
    """A direct launch says "Ctrl-C stops it": the signal reaches the agent's loop (the
    handler only counts it: a handler that took a lock could hang, see
    tests/test_agent.py), which stops the run's process group; the run ends stopped."""
    import os
    import signal
    import subprocess
    import sys

    from launchctl.store import Store
    from tests.conftest import wait_for

    code = make_script(tmp_path / "code", "main.py",
                       "import time\nprint('up', flush=True)\ntime.sleep(60)\n").parent  # fmt: skip
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launchctl", "launch", "-u", str(code), "-E", "python main.py"],
            stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    try:
        wait_for(lambda: "up" in out.read_text(), what="the run's first line")
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=30) != 0
    finally:
        proc.kill()
    text = out.read_text()
    assert text.rstrip().endswith("stopped (interrupted)"), text
    assert "Traceback" not in text
    (run,) = Store(home).runs.select(limit=None)
    assert (run["state"], run["reason"]) == ("stopped", "interrupted")


@pytest.mark.parametrize(("sig", "as_json"), [("SIGINT", False), ("SIGTERM", True)])
def test_ctrl_c_stops_waiting_for_a_queued_run_and_leaves_it_queued(
    sig: str, as_json: bool, tmp_path: Path, home: Path
) -> None:
    """`launch -q Q --wait` with no agent serving Q: Ctrl-C (or SIGTERM) stops the wait
    with 130 and one line saying the run goes on; the run stays queued, no traceback."""
    import os
    import signal
    import subprocess
    import sys

    from launchctl.store import Store
    from tests.conftest import wait_for

    code = make_script(tmp_path / "code", "main.py", "print('hi')\n").parent
    out = tmp_path / "out.txt"
    args = ["launch", "-q", "default", "-u", str(code), "-E", "python main.py", "--wait"]
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launchctl", *args, *(["--json"] if as_json else [])],
            stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    try:
        wait_for(lambda: "no agent is serving queue default" in out.read_text(), what="the hint")
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
    text = out.read_text()
    (run,) = Store(home).runs.select(limit=None)
    assert f"stopped waiting; run {run['id']} goes on" in text
    assert "Traceback" not in text
    assert run["state"] == "queued"


def test_the_stop_waiting_handler_writes_nothing_and_ignores_a_second_signal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The handler only raises (a BaseException, as Ctrl-C's own is); the line is said by
    the caller. A second Ctrl-C while it says so is ignored, not a traceback."""
    import signal

    from launchctl.cli import launch as cli_launch

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        cli_launch._stop_waiting_on_signals()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        with pytest.raises(cli_launch._StoppedWaiting):
            handler(signal.SIGTERM, None)
        assert not isinstance(cli_launch._StoppedWaiting(), Exception)
        assert capsys.readouterr() == ("", "")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
