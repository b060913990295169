"""What a code snapshot may never hold (found by an adversarial QA pass): launchctl's own
store (a project-local LAUNCHCTL_HOME put the database and the secrets in the job), a file
pulled from outside the job by swapping a folder for a link between the scan and the
read, and a name that is not text (it stopped the whole job with an internal error)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from launchctl import jobfiles, jobs
from launchctl.errors import LaunchctlError
from tests.conftest import cli, cli_json


def cli_json_env(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(*args, "--json", env=env, check=True).stdout)


def test_a_project_local_store_never_goes_into_the_snapshot_or_the_working_copy(
    tmp_path: Path,
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text("print(1)\n")
    env = {"LAUNCHCTL_HOME": str(project / ".launchctl")}
    cli("secret", "set", "wandb-key", input="hunter2\n", env=env, check=True)
    proc = cli(
        "launch", "-u", str(project), "-E", "sh -c 'find . | sort; grep -rl hunter2 . || true'",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [".", "./train.py"]  # nothing else: no store
    assert "hunter2" not in proc.stdout
    special = cli_json_env(env, "job", "show", "proj")["source"]["special"]
    assert special == [
        {"path": ".launchctl", "what": "launchctl's own store (its database, secrets and runs)",
         "action": "left out"}
    ]  # fmt: skip
    # The store itself, or a folder in it, is refused as a job's code, nothing written.
    for inside in (project / ".launchctl", project / ".launchctl" / "runs"):
        proc = cli("job", "create", "code", str(inside), "-E", "ls", env=env)
        assert proc.returncode == 1
        assert proc.stderr == (
            f"launchctl: error: {inside} is launchctl's own store (LAUNCHCTL_HOME) or inside"
            " it: copy the code out\n"
        )
    assert len(cli_json_env(env, "job", "list")) == 1


def test_a_folder_swapped_for_a_link_after_the_scan_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race, made certain: the scan sees a plain folder, and before the files are read
    it becomes a link to a folder outside the job holding a file of the same name."""
    code, outside = tmp_path / "code", tmp_path / "outside"
    (code / "zzz").mkdir(parents=True)
    (code / "zzz" / "secret").write_text("INSIDE\n")
    (code / "main.py").write_text("print(1)\n")
    outside.mkdir()
    (outside / "secret").write_text("OUTSIDE-SECRET\n")
    real_scan = jobfiles.scan

    def scan_then_swap(*args: Any, **kwargs: Any) -> jobfiles.Tree:
        tree = real_scan(*args, **kwargs)
        os.rename(code / "zzz", tmp_path / "moved")
        os.symlink(outside, code / "zzz")
        return tree

    monkeypatch.setattr(jobfiles, "scan", scan_then_swap)
    with pytest.raises(LaunchctlError, match=r"zzz/secret changed while it was read"):
        jobs.snapshot_directory(code)
    # The reader alone: a link anywhere on the way is refused, not only at the end.
    with pytest.raises(OSError):
        jobfiles.read_under(code, "zzz/secret")
    assert jobfiles.read_under(code, "main.py") == b"print(1)\n"


def test_a_name_that_is_not_text_is_left_out_and_listed_not_an_internal_error(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "ok.py").write_text("print('ok')\n")
    with open(os.path.join(os.fsencode(code), b"bad\xff\xfe"), "w") as fh:
        fh.write("x")
    os.mkdir(os.path.join(os.fsencode(code), b"dir\xff"))
    proc = cli("launch", "-u", str(code), "-E", "sh -c 'ls; python ok.py'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ok.py", "ok"]
    special = cli_json("job", "show", "code")["source"]["special"]
    assert {(s["path"], s["what"]) for s in special} == {
        ("bad\\xff\\xfe", "name that is not UTF-8"),
        ("dir\\xff", "folder whose name is not UTF-8"),
    }


def test_a_link_into_what_the_snapshot_leaves_out_is_left_out_and_listed(
    tmp_path: Path,
) -> None:
    """Found by an adversarial QA pass: `cfg -> .git/config` and `wl -> wandb` were kept as
    links to what the snapshot does not hold, and dangled in the working copy."""
    code = tmp_path / "code"
    (code / ".git").mkdir(parents=True)
    (code / ".git" / "config").write_text("[core]\n")
    (code / "wandb").mkdir()
    (code / "ok.py").write_text("print('ok')\n")
    (code / "cfg").symlink_to(".git/config")
    (code / "wl").symlink_to("wandb")
    (code / "also.py").symlink_to("ok.py")  # inside and kept: no change there
    proc = cli("launch", "-u", str(code), "-E", "sh -c 'ls; python also.py'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["also.py", "ok.py", "ok"]
    special = cli_json("job", "show", "code")["source"]["special"]
    assert [(s["path"], s["what"], s["action"]) for s in special] == [
        ("cfg", "link into what the job leaves out (-> .git/config)", "left out"),
        ("wl", "link into what the job leaves out (-> wandb)", "left out"),
    ]
