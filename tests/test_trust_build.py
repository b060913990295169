"""Trust on a shared machine, builds and credentials (issue 9, findings 1, 5 and 7).

Each test plays the attack from the outside: the real CLI as two users (LAUNCHCTL_USER
alice, an admin, and bob, a member), real files under tmp_path, real Docker builds through
a real agent.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import BUSYBOX, PYTHON_IMAGE, cli, cli_json, make_script, table_counts
from tests.pkgindex import PACKAGE, PACKAGE_VALUE, Index, make_wheel

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}


def logs_and_build(run_id: str) -> str:
    """The run's log and its build.log: BuildKit's own output is there (issue 12, item 9)."""
    text = cli("logs", run_id).stdout
    build = Path(cli_json("runs", "show", run_id)["log_path"]).with_name("build.log")
    return text + (build.read_text() if build.exists() else "")


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
        log = logs_and_build(first)
        assert "REACHED-THE-HOST" not in log
        assert "Connection refused" in log  # the build's own loopback has no index on it

        second = cli("launch", "-q", "hosted", "-u", str(job), "-E", "sh -c true",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("hosted")
        assert store.runs.state(second) == "finished"
        assert "REACHED-THE-HOST" in logs_and_build(second)
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
        log = logs_and_build(run_id)
        assert f"value: {PACKAGE_VALUE}" in log  # the generated requirements were installed
        assert (
            f"job file .launchctl-requirements.txt: link leaving the job (-> {victim}):"
            " left out" in log
        )
    finally:
        remove_images(docker, store)


def git_repo(root: Path, victim: Path) -> str:
    import subprocess

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
        log = logs_and_build(run_id)
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


# -- finding 5: credentials are secret references, masked everywhere, out of images ---------
@dataclass
class AuthIndex:
    """A package index on loopback that serves only to ``lc:<token>`` (HTTP basic auth)."""

    url: str  # http://127.0.0.1:PORT/simple/, without credentials
    token: str
    answers: list[str]  # "ok" or "denied", one per request

    @property
    def with_token(self) -> str:
        return self.url.replace("http://", f"http://lc:{self.token}@")


@pytest.fixture(scope="module")
def auth_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthIndex]:
    root = tmp_path_factory.mktemp("auth-index")
    (root / "files").mkdir()
    wheel = make_wheel(root / "files", PACKAGE, "1.0", f"VALUE = {PACKAGE_VALUE!r}\n")
    (root / "simple" / PACKAGE).mkdir(parents=True)
    (root / "simple" / PACKAGE / "index.html").write_text(
        f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n'
    )
    token = f"tok{os.urandom(12).hex()}"
    expected = "Basic " + base64.b64encode(f"lc:{token}".encode()).decode()
    answers: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                answers.append("denied")
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="index"')
                self.end_headers()
                return
            answers.append("ok")
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield AuthIndex(f"http://127.0.0.1:{server.server_address[1]}/simple/", token, answers)
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry_up() -> str:
    try:
        urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=5).close()
    except OSError as exc:
        pytest.skip(f"no registry on 127.0.0.1:5000: run scripts/services.sh all ({exc})")
    return "localhost:5000"


def docker_cli(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def secret_queue(name: str, auth_index: AuthIndex, registry: str) -> str:
    """alice's queue whose index URL and registry password are secrets; returns the password."""
    password = f"regpw{os.urandom(8).hex()}"
    as_alice("secret", "set", "idx", input=auth_index.with_token, check=True)
    as_alice("secret", "set", "regpw", input=password, check=True)
    team_with_queue(
        name,
        {
            "builder": {
                "base_image": PYTHON_IMAGE,
                "index_url": {"secret": "idx"},
                "network": "host",
            },
            "registry": {"url": registry, "username": "lc", "password": {"secret": "regpw"}},
        },
    )
    return password


def test_index_token_and_registry_password_are_secrets_kept_out_of_outputs_logs_and_images(
    docker: Any, store: Store, auth_index: AuthIndex, registry_up: str, tmp_path: Path
) -> None:
    password = secret_queue("private", auth_index, registry_up)
    nonce = os.urandom(4).hex()  # no pip layer cached by an earlier session
    job = make_script(tmp_path / "job", "requirements.txt", f"# {nonce}\n{PACKAGE}\n").parent
    make_script(job, "train.py", f"import {PACKAGE}\nprint('value:', {PACKAGE}.VALUE)\n")
    try:
        run_id = cli("launch", "-q", "private", "-u", str(job), "-E", "python train.py",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("private")
        run = store.runs.get(run_id)
        assert run["state"] == "finished", run
        log = logs_and_build(run_id)
        assert f"value: {PACKAGE_VALUE}" in log  # installed from the index that needs the token
        assert "ok" in auth_index.answers
        assert run["image"].startswith(f"{registry_up}/")  # pushed with the secret password
        outputs = {
            "queue show": as_alice("queue", "show", "private", check=True).stdout,
            "queue show --json": as_alice("queue", "show", "private", "--json", check=True).stdout,
            "queue list --json": cli("queue", "list", "--json", env=BOB, check=True).stdout,
            "queue render": cli("queue", "render", "private", env=BOB, check=True).stdout,
            "logs": log,
            "runs show --json": cli("runs", "show", run_id, "--json", check=True).stdout,
            "docker history": docker_cli("history", "--no-trunc", run["image"]),
            "docker image inspect": docker_cli("image", "inspect", run["image"]),
        }
        for what, text in outputs.items():
            assert auth_index.token not in text, what
            assert password not in text, what
        assert '"secret": "idx"' in outputs["queue show --json"]  # the reference is shown
    finally:
        remove_images(docker, store)


def test_a_user_dockerfile_mounts_the_index_secret_and_gets_no_token_in_build_args(
    docker: Any, store: Store, auth_index: AuthIndex, registry_up: str, tmp_path: Path
) -> None:
    secret_queue("private", auth_index, registry_up)
    nonce = os.urandom(4).hex()
    job = make_script(
        tmp_path / "job", "Dockerfile",
        f"FROM {PYTHON_IMAGE}\nARG PIP_INDEX_URL\n"
        "RUN --mount=type=secret,id=pip-config,target=/etc/pip.conf"
        f' echo "{nonce} index=[$PIP_INDEX_URL]"'
        f" && pip install --break-system-packages {PACKAGE}\n"
        "WORKDIR /app\nCOPY train.py /app/\n",
    ).parent  # fmt: skip
    make_script(job, "train.py", f"import {PACKAGE}\nprint('value:', {PACKAGE}.VALUE)\n")
    try:
        run_id = cli("launch", "-q", "private", "-u", str(job), "-E", "python train.py",
                     env=BOB, check=True).stdout.strip()  # fmt: skip
        run_burst("private")
        run = store.runs.get(run_id)
        assert run["state"] == "finished", run
        log = logs_and_build(run_id)
        assert f"value: {PACKAGE_VALUE}" in log
        assert f"{nonce} index=[]" in log  # no PIP_INDEX_URL build arg: history keeps those
        for text in (log, docker_cli("history", "--no-trunc", run["image"])):
            assert auth_index.token not in text
    finally:
        remove_images(docker, store)


@pytest.mark.parametrize(
    "config",
    [
        {"builder": {"index_url": "http://lc:TOKEN123@10.0.0.1/simple/"}},
        {"builder": {"extra_index_urls": ["http://TOKEN123@10.0.0.1/simple/"]}},
        {"builder": {"find_links": ["https://lc:TOKEN123@10.0.0.1/wheels/"]}},
        {"registry": {"url": "localhost:5000", "username": "lc", "password": "TOKEN123"}},
        {"registry": "lc:TOKEN123@localhost:5000"},
    ],
    ids=["index_url", "extra_index_urls", "find_links", "registry password", "registry url"],
)
def test_a_credential_in_plain_text_is_refused_when_a_queue_is_written(
    home: Path, config: dict[str, Any]
) -> None:
    as_alice("queue", "list", check=True)  # the store, with its default queue
    before = table_counts(home)
    proc = as_alice("queue", "create", "leaky", "-r", "local-container",
                    "--config", json.dumps(config))  # fmt: skip
    assert proc.returncode != 0
    assert "TOKEN123" not in proc.stderr and "Traceback" not in proc.stderr
    if "registry" not in config or "password" in config["registry"]:
        assert '{"secret": "NAME"}' in proc.stderr
    assert table_counts(home) == before
    as_alice("queue", "create", "leaky", "-r", "local-container", check=True)
    edit = as_alice("queue", "edit", "leaky", "--config", json.dumps(config))
    assert edit.returncode != 0 and "TOKEN123" not in edit.stderr
    assert "TOKEN123" not in as_alice("queue", "show", "leaky", "--json").stdout


def test_a_plain_text_credential_from_an_older_store_is_masked_in_every_queue_output(
    home: Path,
) -> None:
    import sqlite3

    as_alice("queue", "create", "old", "-r", "local-container", check=True)
    config = {
        "builder": {"index_url": "http://lc:TOKEN123@10.0.0.1/simple/"},
        "registry": {"url": "localhost:5000", "username": "lc", "password": "PASSWORD456"},
    }
    db = sqlite3.connect(home / "launchctl.db")
    with db:  # as an older launchctl wrote it
        db.execute("UPDATE queues SET config = ? WHERE name = 'old'", [json.dumps(config)])
    db.close()
    for args in (["queue", "show", "old"], ["queue", "show", "old", "--json"],
                 ["queue", "list", "--json"], ["queue", "render", "old"]):  # fmt: skip
        out = as_alice(*args, check=True).stdout
        assert "TOKEN123" not in out and "PASSWORD456" not in out, args
        assert "***" in out, args
