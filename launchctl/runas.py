"""``run_as``: the Unix user a local-process queue's runs run as, when the agent is root.

A lab runs one agent as root (a service) for everyone; a queue's admin names an
unprivileged account in the queue config (``run_as: NAME``), and that queue's runs run
as it: they cannot read the store, the secrets or anything else of the agent's. The
agent accepts only the accounts its operator lists in ``LAUNCHCTL_RUN_AS_USERS`` (a team
admin must not be able to run code as any user of the machine), never root.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchctl.errors import ConfigError, LaunchctlError

ENV_ALLOWED = "LAUNCHCTL_RUN_AS_USERS"
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}\$?$")


@dataclass(frozen=True)
class RunAs:
    """A Unix account, as looked up when a run starts."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str


def lookup(name: Any, where: str = "run_as") -> RunAs:
    """The account ``name``: an existing user other than root; LaunchctlError otherwise."""
    import pwd

    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise ConfigError(
            f"{where}: must be the name of a Unix user (letters, digits, '.', '_', '-'),"
            f" written as it is, without template fields or macros; got {name!r}"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"{where}: there is no Unix user named {name!r} on this machine"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"{where}: {name!r} is root; name an unprivileged user (runs run as the agent's"
            " own user when run_as is not set)"
        )
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return RunAs(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=groups,
        home=entry.pw_dir,
        shell=entry.pw_shell,
    )


def check_config(config: dict[str, Any], resource: str, where: str) -> None:
    """A queue config's ``run_as``, when it is written: a local-process queue, a real user."""
    if "run_as" not in config:
        return
    if resource != "local-process":
        raise ConfigError(
            f"{where}: run_as applies to local-process queues only (a container runs as the"
            " user its image says)"
        )
    lookup(config["run_as"], f"{where}: run_as")


def allowed_users() -> list[str]:
    """The accounts this agent's operator lets runs run as: ``$LAUNCHCTL_RUN_AS_USERS``."""
    value = os.environ.get(ENV_ALLOWED, "")
    return [part.strip() for part in value.split(",") if part.strip()]


def for_run(value: Any, queue_name: str) -> RunAs:
    """The account a run of ``queue_name`` runs as, checked where the run starts (the agent).

    The agent must be root (only root can start a process as another user), the account
    must exist, must not be root, and must be one the agent's operator allows.
    """
    where = f"queue {queue_name}: run_as"
    euid = os.geteuid()
    if euid != 0:
        raise LaunchctlError(
            f"{where} {value!r} needs an agent that runs as root (this agent runs as uid"
            f" {euid}); run the agent as root, or remove run_as from the queue"
        )
    user = lookup(value, where)
    allowed = allowed_users()
    if user.name not in allowed:
        listed = ", ".join(allowed) if allowed else "none"
        raise LaunchctlError(
            f"{where} {user.name!r} is not one of the users this agent may run runs as"
            f" ({ENV_ALLOWED} in the agent's environment lists: {listed})"
        )
    return user


def _can_search(st: os.stat_result, user: RunAs) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in user.groups or st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_reachable(folder: Path, user: RunAs) -> None:
    """``folder`` can be entered by ``user``: every folder above it lets them search it.

    By the mode bits (ACLs are not read): a home that is 0700 keeps every run out, and the
    message says what to change. Search (x) is all a run needs: its files stay 0600.
    """
    here = Path(folder).resolve()
    for part in [*reversed(here.parents), here]:
        st = part.stat()
        if not _can_search(st, user):
            raise LaunchctlError(
                f"user {user.name} (run_as) cannot reach the run's folder: {part} is mode"
                f" {stat.S_IMODE(st.st_mode):04o}; let it be searched (chmod o+x {part}, or g+x"
                " with a group of that user's; the store's files stay private) or choose a"
                " LAUNCHCTL_HOME under a folder others may enter"
            )


def hand_over(folder: Path, user: RunAs) -> None:
    """Give the run's working copy to ``user``: every file and folder in it, never
    following a symbolic link (a link in a job's code must not make root chown its target).

    Bottom up, the top last: while root walks a folder, the folders above it are still
    root's, so a process of that user (one left over from an earlier run) cannot swap a
    folder for a link under the walk.
    """
    for top, dirs, files in os.walk(folder, topdown=False, followlinks=False):
        for name in [*files, *dirs]:
            os.chown(os.path.join(top, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(folder, user.uid, user.gid, follow_symlinks=False)


def environment(user: RunAs) -> dict[str, str]:
    """The variables that say who the run is: its user's, not the agent's."""
    return {
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell or "/bin/sh",
    }


# What a run_as run keeps of the agent's own environment: how to find programs and how to
# speak, nothing that could be the agent's (tokens, sockets, its store).
INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
INHERITED_PREFIXES = ("LC_",)
