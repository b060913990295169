"""Lay out a run's working copy: the code snapshot, or a fresh clone of a git job."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from launchctl import jobfiles
from launchctl.jobs import check_git_commit, check_git_remote
from launchctl.runners import RunnerError
from launchctl.store import Store


def prepare(
    store: Store,
    run: dict[str, Any],
    version: dict[str, Any] | None,
    dest: Path,
    *,
    fresh: bool = False,
) -> str:
    """Fill ``dest`` with the job's files. Returns a line for the run's log. ``fresh``: its
    folder was made just now (nothing of an earlier attempt can be in it)."""
    if not fresh and dest.exists():
        shutil.rmtree(dest)
    if version is None:
        dest.mkdir(parents=True)
        return "no job source: running in an empty folder"
    source = version["source"]
    if "snapshot" in source:
        # Unpacked once per agent and job version, then written afresh for each run.
        digest = source["snapshot"]
        skipped = jobfiles.extract_cached(digest, lambda: store.jobs.snapshot(digest), dest)
        note = f"code snapshot {source['snapshot'][:12]} ({source.get('files', '?')} files)"
        left = [s for s in source.get("special") or [] if s.get("action") == "left out"]
        if left:
            note += f"; {len(left)} entries left out at job create (job show lists them)"
        return note + "".join(f"; left out of the working copy: {line}" for line in skipped)
    if "git" in source:
        return _clone(source["git"]["remote"], source["git"].get("commit"), dest)
    raise RunnerError(f"job {version['name']} has no code to run here", stage="agent")


class _AgentRefusal(RunnerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, stage="agent")


def _user_umask() -> int:
    """The umask git clones with: the user's own (launchctl's is 077 for the store)."""
    from launchctl.paths import run_umask

    mask = run_umask()
    return -1 if mask is None else mask


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, GIT_TERMINAL_PROMPT="0"),
            umask=_user_umask(),  # the working copy is the user's, not the store's
        )
    except FileNotFoundError:
        raise RunnerError("git is not installed; a git job needs it", stage="agent") from None
    except subprocess.TimeoutExpired:
        raise RunnerError(f"git {args[0]} took over 10 minutes", stage="agent") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunnerError(f"git {args[0]} failed: {last}", stage="agent")
    return done.stdout.strip()


def _clone(remote: str, commit: str | None, dest: Path) -> str:
    # Checked again here: a hand-edited row must not hand git an option (--upload-pack=...).
    check_git_remote(remote, _AgentRefusal)
    check_git_commit(commit, _AgentRefusal)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git("clone", "--quiet", "--", remote, str(dest))
    if commit:
        # "--" after the commit: it is a revision, never a path (nor, checked above, an option).
        _git("checkout", "--quiet", commit, "--", cwd=dest)
    head = _git("rev-parse", "HEAD", cwd=dest)
    return f"git clone of {remote} at {head}"
