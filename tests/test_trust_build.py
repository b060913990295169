"""Trust on a shared machine, builds and credentials (issue 9, findings 1, 5 and 7).

Each test plays the attack from the outside: the real CLI as two users (LAUNCHCTL_USER
alice, an admin, and bob, a member), real files under tmp_path, real Docker builds through
a real agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import BUSYBOX, PYTHON_IMAGE, cli, cli_json, make_script
from tests.pkgindex import PACKAGE, PACKAGE_VALUE, Index

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


# -- finding 1: nothing the agent does on the host follows a link that came from a job ------
ORIGINAL = "the host's own file\n"


def pyproject_job(root: Path, victim: Path) -> Path:
    """A code job whose pyproject's dependencies are attacker text, beside a link named like
    the file the builder generates from them, pointing at a host file outside the job."""
    make_script(
        root, "pyproject.toml",
        f'[project]\nname = "x"\ndependencies = ["{PACKAGE}", "# * * * * * root evil"]\n',
    )  # fmt: skip
    make_script(root, "train.py", f"import {PACKAGE}\nprint('value:', {PACKAGE}.VALUE)\n")
    (root / ".launchctl-requirements.txt").symlink_to(victim)
    return root


def index_queue(name: str, index: Index) -> None:
    team_with_queue(
        name,
        {"builder": {"base_image": PYTHON_IMAGE, "index_url": index.simple, "network": "host"}},
    )


@pytest.mark.parametrize("victim_exists", [True, False], ids=["existing", "missing"])
def test_a_code_jobs_link_to_a_host_file_is_not_written_through_by_the_build(
    docker: Any, store: Store, index: Index, tmp_path: Path, victim_exists: bool
) -> None:
    victim = tmp_path / "etc-cron.d-x"  # stands in for /etc/cron.d/x
    if victim_exists:
        victim.write_text(ORIGINAL)
    job = pyproject_job(tmp_path / "job", victim)
    index_queue("box", index)
    try:
        run_id = cli("launch", "-q", "box", "-u", str(job), "-E", "python train.py",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("box")
        if victim_exists:
            assert victim.read_text() == ORIGINAL
        else:
            assert not os.path.lexists(victim)
        run = store.runs.get(run_id)
        assert run["state"] == "finished", run
        log = cli("logs", run_id, check=True).stdout
        assert f"value: {PACKAGE_VALUE}" in log  # the generated requirements were installed
        assert (
            f"job file .launchctl-requirements.txt: link leaving the job (-> {victim}):"
            " left out" in log
        )
    finally:
        remove_images(docker, store)


def git_repo(root: Path, victim: Path) -> str:

    pyproject_job(root, victim)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)  # fmt: skip
    return f"file://{root}"


def test_a_git_jobs_link_to_a_host_file_is_left_out_of_the_build_context(
    docker: Any, store: Store, index: Index, tmp_path: Path
) -> None:
    """A git clone keeps the link as committed: the builder itself must not follow it."""
    victim = tmp_path / "victim"
    victim.write_text(ORIGINAL)
    remote = git_repo(tmp_path / "repo", victim)
    index_queue("box", index)
    try:
        run_id = cli("launch", "-q", "box", "-u", remote, "-E", "python train.py",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("box")
        assert victim.read_text() == ORIGINAL
        assert store.runs.state(run_id) == "finished", store.runs.get(run_id)
        log = cli("logs", run_id, check=True).stdout
        assert f"value: {PACKAGE_VALUE}" in log
        assert f".launchctl-requirements.txt: link leaving the job (-> {victim})" in log
    finally:
        remove_images(docker, store)


def test_job_show_says_what_happens_to_links_and_fifos(tmp_path: Path) -> None:
    job = make_script(tmp_path / "job", "main.py", "print('hi')\n").parent
    (job / "data").mkdir()
    make_script(job / "data", "a.csv", "1\n")
    (job / "dangling").symlink_to("no-such-file")
    (job / "data-link").symlink_to("data")
    (job / "outside").symlink_to(tmp_path)
    os.mkfifo(job / "pipe")
    cli("job", "create", "code", str(job), "-E", "python main.py", "-n", "odd", check=True)
    shown = cli("job", "show", "odd", check=True).stdout
    assert "special:    dangling: dangling link (-> no-such-file): left out" in shown
    assert "special:    data-link: link to a folder (-> data): kept as a link" in shown
    assert f"special:    outside: link leaving the job (-> {tmp_path}): left out" in shown
    assert "special:    pipe: FIFO: left out" in shown
    special = cli_json("job", "show", "odd")["source"]["special"]
    assert {s["path"] for s in special} == {"dangling", "data-link", "outside", "pipe"}


def test_an_old_snapshot_with_a_link_out_of_the_job_cannot_make_the_agent_write_outside(
    home: Path, tmp_path: Path
) -> None:
    """A snapshot from before this rule (or a hand-edited store) holding ``escape -> <host
    folder>`` and a file under it: the working copy gets neither, and the run still runs."""
    import io
    import sqlite3
    import tarfile

    outside = tmp_path / "host-folder"
    outside.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        for name, text in (("escape/pwned", b"x"), ("main.py", b"print('ran')\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    job = make_script(tmp_path / "job", "main.py", "print('ran')\n").parent
    cli("job", "create", "code", str(job), "-E", "python main.py", "-n", "old", check=True)
    digest = cli_json("job", "show", "old")["source"]["snapshot"]
    sqlite = sqlite3.connect(home / "launchctl.db")
    with sqlite:  # what an older launchctl stored for such a folder
        sqlite.execute("UPDATE snapshots SET data = ? WHERE digest = ?", [buf.getvalue(), digest])
    sqlite.close()
    cli("queue", "create", "proc", check=True)
    run_id = cli("launch", "-q", "proc", "-j", "old", check=True).stdout.strip()
    cli("agent", "-q", "proc", "--burst", check=True)
    assert list(outside.iterdir()) == []
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished", run
    assert not os.path.lexists(Path(run["workdir"]) / "escape")
    starting = next(e for e in run["events"] if e["to_state"] == "starting")
    assert "escape: link leaving the job" in starting["message"]
    assert "escape/pwned" in starting["message"]
