"""Trust on a shared machine, builds and credentials (issue 9, findings 1, 5 and 7).

Each test plays the attack from the outside: the real CLI as two users (LAUNCHCTL_USER
alice, an admin, and bob, a member), real files under tmp_path, real Docker builds through
a real agent.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from launchctl.store import Store
from tests.conftest import BUSYBOX, PYTHON_IMAGE, cli, cli_json, make_script
from tests.pkgindex import Index

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}


def as_alice(*args: str, **kwargs: Any) -> Any:
    return cli(*args, env=ALICE, **kwargs)


def team_with_queue(name: str, config: dict[str, Any]) -> None:
    """alice's team ``lab`` (bob a member) and her local-container queue ``name``."""
    if cli("team", "show", "lab", env=ALICE).returncode != 0:
        as_alice("team", "create", "lab", check=True)
        as_alice("team", "add", "lab", "bob", check=True)
    as_alice("queue", "create", name, "-r", "local-container", "--entity", "lab",
             "--config", json.dumps(config), check=True)  # fmt: skip


def run_burst(queue: str) -> None:
    as_alice("agent", "-q", queue, "--burst", check=True, timeout=300)


def remove_images(docker: Any, store: Store) -> None:
    for run in store.runs.select(limit=None):
        if run["image"] and run["image"] not in (PYTHON_IMAGE, BUSYBOX):
            with contextlib.suppress(Exception):  # already gone
                docker.images.remove(run["image"], force=True)


# -- finding 7: builds use the bridge network unless the queue admin says host ---------------
def reach_loopback_job(root: Path, index: Index) -> Path:
    """A job whose Dockerfile's RUN step fetches a page from a server on the host's loopback
    and then prints REACHED-THE-HOST (the RUN line itself does not hold those words)."""
    nonce = os.urandom(4).hex()  # no cached layer from an earlier session
    fetch = (
        f"import urllib.request; urllib.request.urlopen('{index.simple}', timeout=5);"
        " print('REACHED-' + 'THE-HOST')"
    )
    make_script(
        root, "Dockerfile", f'FROM {PYTHON_IMAGE}\nRUN echo {nonce} && python3 -c "{fetch}"\n'
    )
    make_script(root, "main.py", "")
    return root


def test_a_build_cannot_reach_the_hosts_loopback_unless_the_queue_admin_allows_host_network(
    docker: Any, store: Store, index: Index, tmp_path: Path
) -> None:
    job = reach_loopback_job(tmp_path / "reach", index)
    team_with_queue("bridged", {"builder": {}})
    team_with_queue("hosted", {"builder": {"network": "host"}})
    try:
        first = cli("launch", "-q", "bridged", "-u", str(job), "-E", "sh -c true",
                    env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("bridged")
        run = store.runs.get(first)
        assert (run["state"], run["stage"]) == ("failed", "build"), run
        log = cli("logs", first, check=True).stdout
        assert "REACHED-THE-HOST" not in log
        assert "Connection refused" in log  # the build's own loopback has no index on it

        second = cli("launch", "-q", "hosted", "-u", str(job), "-E", "sh -c true",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("hosted")
        assert store.runs.state(second) == "finished"
        assert "REACHED-THE-HOST" in cli("logs", second, check=True).stdout
    finally:
        remove_images(docker, store)


def test_a_launcher_cannot_choose_the_build_network_in_resource_args(tmp_path: Path) -> None:
    team_with_queue("bridged", {"builder": {}})
    job = make_script(tmp_path / "job", "main.py", "").parent
    host = json.dumps({"local-container": {"builder": {"network": "host"}}})
    # A member sets no resource args at all; builder.network in them is refused for anyone.
    cpus = json.dumps({"local-container": {"cpus": 1}})
    for args, says in ((host, "builder.network is not allowed"), (cpus, "not an admin")):
        member = cli("launch", "-q", "bridged", "-u", str(job), "-E", "python main.py",
                     "-R", args, env=BOB)  # fmt: skip
        assert member.returncode != 0
        assert says in member.stderr and "Traceback" not in member.stderr
    # Not even the queue's admin sets it per run: the queue's own builder section says it.
    admin = as_alice("launch", "-q", "bridged", "-u", str(job), "-E", "python main.py", "-R", host)
    assert admin.returncode != 0
    assert "builder.network" in admin.stderr and "Traceback" not in admin.stderr
    assert cli_json("runs", "list") == []


def test_a_build_network_other_than_the_known_ones_is_refused_when_the_queue_is_written() -> None:
    proc = as_alice("queue", "create", "odd", "-r", "local-container",
                    "--config", json.dumps({"builder": {"network": "container:abc"}}))  # fmt: skip
    assert proc.returncode != 0
    assert "builder.network must be one of bridge, default, host, none" in proc.stderr
    assert "odd" not in as_alice("queue", "list").stdout
