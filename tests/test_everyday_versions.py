"""Issue 12, item 1: an ad-hoc `launch -u DIR -E CMD` never silently changes what
`launch -j NAME` means for everyone.

The rule (README, "Job versions"): `-E` given with `-u` is the run's entry point; an
existing job keeps its own. A launch makes a new version of an existing job only when
what the job is (its code, Dockerfile, build context, base image, runtime) changed, and
says so in one line on stderr.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import EXAMPLES, cli, cli_json, git

HELLO = str(EXAMPLES / "hello")
FAIL = 'python -c "import sys; sys.exit(3)"'


def _as(user: str) -> dict[str, str]:
    return {"LAUNCHCTL_USER": user}


def _job(user: str, ref: str) -> dict:
    proc = cli("job", "show", ref, "--json", env=_as(user), check=True)
    return json.loads(proc.stdout)


def _run(run_id: str) -> dict:
    return json.loads(cli("runs", "show", run_id, "--json", check=True).stdout)


def _copy_of_hello(tmp_path: Path) -> Path:
    folder = tmp_path / "code" / "hello"
    shutil.copytree(HELLO, folder)
    return folder


def test_a_colleagues_launch_j_runs_the_job_after_an_ad_hoc_launch_u(tmp_path: Path) -> None:
    """The issue's scenario, with two users: alice's experiment with another entry point
    on the job's own code does not change what bob's `launch -j hello` runs."""
    cli("queue", "list", env=_as("alice"), check=True)  # `default` is alice's queue
    cli("job", "create", "code", HELLO, "-E", "python train.py", env=_as("alice"), check=True)
    cli("team", "add", "alice", "bob", env=_as("alice"), check=True)

    adhoc = cli("launch", "-q", "default", "-u", HELLO, "-E", FAIL, env=_as("alice"), check=True)
    lines = adhoc.stderr.splitlines()
    assert lines[0] == (
        "job hello:v0 unchanged: -E applies to this run only; the job's entry point stays"
        " 'python train.py' (`job create -E` changes it)"
    ), adhoc.stderr
    job = _job("alice", "hello")
    assert job["version"] == 0 and job["versions"] == ["v0"]
    assert job["entrypoint"] == ["python", "train.py"]

    theirs = cli("launch", "-q", "default", "-j", "hello", env=_as("bob"), check=True)
    assert "job hello" not in theirs.stderr  # bob's launch changes no job: nothing said
    cli("agent", "-q", "default", "--burst", env=_as("alice"), check=True)

    mine = _run(adhoc.stdout.strip())
    assert mine["state"] == "failed" and mine["exit_code"] == 3
    assert mine["spec"]["job"] == "alice/hello:v0"
    assert mine["spec"]["overrides"]["entry_point"] == ["python", "-c", "import sys; sys.exit(3)"]
    colleague = _run(theirs.stdout.strip())
    assert colleague["state"] == "finished" and colleague["exit_code"] == 0, colleague
    assert "entry_point" not in colleague["spec"]["overrides"]


def test_changed_code_makes_a_new_version_and_says_so_in_one_line(tmp_path: Path) -> None:
    code = _copy_of_hello(tmp_path)
    first = cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    assert "job hello" not in first.stderr  # a new job: its first version, nothing to say
    again = cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    assert "job hello" not in again.stderr  # the same code and entry point: the same version
    assert cli_json("job", "show", "hello")["versions"] == ["v0"]

    with (code / "train.py").open("a") as fh:
        fh.write("print('changed')\n")
    changed = cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    assert changed.stderr.splitlines()[0] == "job hello: new version v1 (code changed)"
    shown = cli_json("job", "show", "hello")
    assert shown["version"] == 1 and shown["entrypoint"] == ["python", "train.py"]

    # New code and another -E: the new version keeps the job's entry point, said on the line.
    with (code / "train.py").open("a") as fh:
        fh.write("print('changed again')\n")
    other = cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py --x", check=True)
    assert other.stderr.splitlines()[0] == (
        "job hello: new version v2 (code changed); -E applies to this run only; the job's"
        " entry point stays 'python train.py' (`job create -E` changes it)"
    )
    assert cli_json("job", "show", "hello")["entrypoint"] == ["python", "train.py"]
    run = _run(other.stdout.strip())
    assert run["spec"]["job"].endswith("/hello:v2")
    assert run["spec"]["overrides"]["entry_point"] == ["python", "train.py", "--x"]


def test_back_to_old_code_reuses_its_version_and_moves_nothing(tmp_path: Path) -> None:
    code = _copy_of_hello(tmp_path)
    original = (code / "train.py").read_text()
    cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    (code / "train.py").write_text(original + "print('v1')\n")
    cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    (code / "train.py").write_text(original)
    back = cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    assert "new version" not in back.stderr
    assert _run(back.stdout.strip())["spec"]["job"].endswith("/hello:v0")
    assert cli_json("job", "show", "hello")["version"] == 1  # latest stays where it was


def test_a_renamed_script_takes_the_launchs_entry_point_and_says_both_changed(
    tmp_path: Path,
) -> None:
    """The job's entry point cannot run on the new code (its script is gone): the new
    version takes -E, and the line says the entry point changed too."""
    code = _copy_of_hello(tmp_path)
    cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    (code / "train.py").rename(code / "main.py")
    proc = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py", check=True)
    assert proc.stderr.splitlines()[0] == (
        "job hello: new version v1 (code and entry point changed)"
    )
    assert cli_json("job", "show", "hello")["entrypoint"] == ["python", "main.py"]


def test_a_changed_dockerfile_is_named_as_the_change(tmp_path: Path) -> None:
    code = _copy_of_hello(tmp_path)
    (code / "Dockerfile.custom").write_text("FROM scratch\n")
    cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    proc = cli(
        "launch", "-q", "default", "-u", str(code), "-E", "python train.py",
        "-D", "Dockerfile.custom", check=True,
    )  # fmt: skip
    assert proc.stderr.splitlines()[0] == "job hello: new version v1 (dockerfile changed)"


def test_a_refused_launch_u_says_nothing_and_makes_no_version(tmp_path: Path) -> None:
    code = _copy_of_hello(tmp_path)
    cli("launch", "-q", "default", "-u", str(code), "-E", "python train.py", check=True)
    (code / "train.py").write_text("print('new')\n")
    proc = cli("launch", "-q", "nope", "-u", str(code), "-E", "python train.py")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "new version" not in proc.stderr
    assert cli_json("job", "show", "hello")["versions"] == ["v0"]


def test_a_git_launch_u_keeps_the_jobs_entry_point_too(tmp_path: Path) -> None:
    repo = _copy_of_hello(tmp_path)
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "hello", cwd=repo)
    url = f"file://{repo}"
    cli("launch", "-q", "default", "-u", url, "-E", "python train.py", check=True)
    proc = cli("launch", "-q", "default", "-u", url, "-E", "python train.py --x", check=True)
    assert proc.stderr.splitlines()[0].startswith("job hello:v0 unchanged: -E applies to this run")
    commit = git("rev-parse", "HEAD", cwd=repo)
    pinned = cli("launch", "-q", "default", "-u", url, "-g", commit, "-E", "python train.py",
                 check=True)  # fmt: skip
    assert pinned.stderr.splitlines()[0] == "job hello: new version v1 (code changed)"
    assert cli_json("job", "show", "hello")["entrypoint"] == ["python", "train.py"]
