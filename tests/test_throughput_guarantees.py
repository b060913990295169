"""Issue 17: what the agent does faster for trivial runs keeps every guarantee.

- A job version's snapshot is unpacked once per agent and kept in memory; each run gets a
  fresh working copy written from it. A run that rewrites, replaces, links or adds files
  in its copy changes nothing the next run of the same version gets.
- The wrapper shell writes the exit code itself, with no rm or mv: a run that plants a
  link where its exit code goes gets no write through it, and an earlier attempt's files
  never stand for the next attempt's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from launchctl.runners.local_process import EXIT_FILE, PID_FILE, wrap
from tests.conftest import cli, cli_json, make_script

# Prints what it was given, then does its worst to its working copy: a file rewritten
# in place, one made read-only to stop a fresh write, one replaced by a link out of the
# job, a folder replaced by a link, a new file, and a link placed where the exit code goes.
ATTACKER = """\
import os, pathlib, sys
print("data:", pathlib.Path("data.txt").read_text().strip())
print("sub:", pathlib.Path("sub/inner.txt").read_text().strip())
print("extra:", os.path.exists("extra.txt"))
print("links:", sorted(p for p in os.listdir(".") if os.path.islink(p)))
with open("data.txt", "a") as fh:
    fh.write("tampered\\n")
os.chmod("data.txt", 0o400)
os.unlink("other.txt")
os.symlink(sys.argv[1], "other.txt")
os.rename("sub", "sub-moved")
os.symlink(sys.argv[1], "sub")
pathlib.Path("extra.txt").write_text("left for the next run\\n")
os.symlink(sys.argv[1], "../exit_code")
"""


def test_a_run_cannot_change_the_working_copy_the_next_run_of_its_version_gets(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    make_script(code, "attack.py", ATTACKER)
    (code / "data.txt").write_text("original\n")
    (code / "other.txt").write_text("other\n")
    make_script(code / "sub", "inner.txt", "inner\n")
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    entry = f"{sys.executable} attack.py {victim}"
    cli("job", "create", "code", str(code), "-E", entry, "-n", "attacker", check=True)
    ids = [cli_json("launch", "-j", "attacker", "-q", "default")["id"] for _ in range(3)]
    # One agent (so one cache) runs the three, one after another.
    cli("agent", "-q", "default", "-j", "1", "--burst", check=True, timeout=120)
    for run_id in ids:
        run = cli_json("runs", "show", run_id)
        assert run["state"] == "finished", run
        log = cli("logs", run_id, check=True).stdout
        assert "data: original" in log and "tampered" not in log
        assert "sub: inner" in log
        assert "extra: False" in log
        assert "links: []" in log
        folder = Path(run["log_path"]).parent
        # Its own exit code was not written through the link it left there.
        assert os.path.islink(folder / EXIT_FILE)
    assert victim.read_text() == "untouched\n"


def test_the_wrapper_writes_no_exit_code_through_a_link_and_leaves_none_stale(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    # The run plants a link where its exit code goes: the shell does not write through it.
    plant = f"import os; os.symlink({str(victim)!r}, {str(folder / EXIT_FILE)!r})"
    import subprocess

    done = subprocess.run(wrap([sys.executable, "-c", plant], folder, None), check=False)
    assert done.returncode == 0
    assert victim.read_text() == "untouched\n"
    assert int((folder / PID_FILE).read_text()) > 0
    # A run with no link gets its code written, whole.
    (folder / EXIT_FILE).unlink()
    done = subprocess.run(wrap([sys.executable, "-c", "raise SystemExit(5)"], folder, None))
    assert done.returncode == 5
    assert (folder / EXIT_FILE).read_text() == "5\n"
