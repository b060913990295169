"""Jobs: content-addressed code snapshots with versions, image jobs, git jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, cli_json, git, make_script, table_counts


def test_same_content_gives_the_same_version_and_a_change_a_new_one(tmp_path: Path) -> None:
    code = tmp_path / "proj"
    make_script(code, "train.py", "print('v0')\n")
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "junk.pyc").write_bytes(b"x")
    first = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj")
    again = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj")
    assert first["version"] == again["version"] == 0 and again["created"] is False
    # Caches do not count as content.
    (code / "__pycache__" / "junk.pyc").write_bytes(b"changed")
    assert (
        cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj")[
            "version"
        ]
        == 0
    )
    (code / "train.py").write_text("print('v1')\n")
    second = cli_json("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj")
    assert second["version"] == 1 and second["created"] is True
    assert cli_json("job", "show", "proj")["version"] == 1
    assert cli_json("job", "show", "proj:latest")["version"] == 1
    assert cli_json("job", "show", "proj:v0")["version"] == 0
    assert cli_json("job", "show", "proj")["versions"] == ["v0", "v1"]
    listed = cli_json("job", "list")
    assert [(j["name"], j["latest"], j["versions"]) for j in listed] == [("proj", 1, 2)]


def test_a_job_version_runs_the_code_as_it_was_snapshotted(tmp_path: Path) -> None:
    code = tmp_path / "proj"
    make_script(code, "train.py", "print('from v0')\n")
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj", check=True)
    (code / "train.py").write_text("print('from v1')\n")
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "proj", check=True)
    out = cli("launch", "-j", "proj:v0", check=True).stdout
    assert "from v0" in out
    assert "from v1" in cli("launch", "-j", "proj", check=True).stdout


def test_missing_paths_and_entrypoints_are_refused(tmp_path: Path) -> None:
    proc = cli("job", "create", "code", str(tmp_path / "nope"), "-E", "python train.py")
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    make_script(tmp_path / "p", "main.py", "")
    proc = cli("job", "create", "code", str(tmp_path / "p"), "-E", "python train.py")
    assert proc.returncode == 1 and "entry point file train.py not found" in proc.stderr
    proc = cli("job", "show", "ghost")
    assert proc.returncode == 1 and "job 'ghost' does not exist" in proc.stderr
    assert cli_json("job", "list") == []
    # No -E: W&B's job create defaults to main.py, and says so (issue 11; it used to be refused)
    proc = cli("job", "create", "code", str(tmp_path / "p"), "--json")
    assert proc.returncode == 0 and "defaulting to main.py" in proc.stderr
    assert json.loads(proc.stdout)["entrypoint"] == ["main.py"]


def test_image_job_is_recorded_but_not_run_as_a_local_process() -> None:
    job = cli_json("job", "create", "image", "localhost:5000/train:1", "-E", "python train.py")
    assert job["source"] == {"image": "localhost:5000/train:1"}
    proc = cli("launch", "-j", job["name"], "-r", "local-process")
    assert proc.returncode == 1 and "cannot run a docker image" in proc.stderr
    proc = cli("launch", "-q", "default", "-j", job["name"])
    assert proc.returncode == 1 and "use a local-container queue" in proc.stderr


def test_git_job_is_cloned_at_run_time_at_its_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    make_script(repo, "train.py", "print('first commit')\n")
    git("add", ".", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "train.py").write_text("print('second commit')\n")
    git("commit", "-qam", "two", cwd=repo)

    pinned = cli_json(
        "job",
        "create",
        "git",
        f"file://{repo}",
        "--git-hash",
        first,
        "-E",
        "python train.py",
        "-n",
        "pinned",
    )
    assert pinned["source"]["git"] == {"remote": f"file://{repo}", "commit": first}
    assert "first commit" in cli("launch", "-j", "pinned", check=True).stdout
    # Without a hash the default branch is cloned when the run starts.
    out = cli("launch", "-u", f"file://{repo}", "-E", "python train.py", check=True)
    assert "second commit" in out.stdout
    runs = cli_json("runs", "list")
    events = cli_json("runs", "show", runs[0]["id"])["events"]
    assert any("git clone" in (e["message"] or "") for e in events)


def test_git_job_that_cannot_be_cloned_fails_at_the_agent_stage(tmp_path: Path) -> None:
    (tmp_path / "not-a-repo").mkdir()  # there, so taken at create; not a repository
    proc = cli("launch", "-u", f"file://{tmp_path}/not-a-repo", "-E", "python train.py")
    assert proc.returncode == 1
    run = cli_json("runs", "list")[0]
    assert run["state"] == "failed" and run["stage"] == "agent"
    assert "git clone failed" in run["reason"]


@pytest.mark.parametrize("source", ["not a url", "file:///nonexistent/repo.git", "/no/such/dir"])
def test_a_git_source_that_is_no_url_nor_a_folder_is_refused_at_create(
    home: Path, source: str
) -> None:
    """Found by an adversarial QA pass: stored, then every run failed at its clone."""
    cli("job", "list", check=True)
    before = table_counts(home)
    proc = cli("job", "create", "git", source, "-E", "python train.py")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"launchctl: error: {source!r} is not a git URL (https://, ssh://, git://,"
        " user@host:path) nor a repository folder on this machine\n"
    )
    assert table_counts(home) == before
    for url in ("https://example.org/team/repo.git", "git@example.org:team/repo.git"):
        assert cli("job", "create", "git", url, "-E", "python train.py").returncode == 0
