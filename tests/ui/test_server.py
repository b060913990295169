"""The web view over HTTP (issue 16): a real ``launchctl ui`` process, driven with urllib.

What it proves: nothing is read or changed without the token, a change needs the token
again (a cookie alone changes nothing), a member cannot edit a queue's template and gets
the CLI's own refusal, names and values show as text, a refused template value is
explained beside its field, secrets show as ``***``, cancel and rerun work, and
``/events`` and the log stream deliver changes as they happen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BUSYBOX,
    EXAMPLES,
    StartAgent,
    cli,
    cli_json,
    make_script,
    table_counts,
    wait_for,
)
from tests.ui.conftest import UiServer

HELLO = str(EXAMPLES / "hello")
ADMIN = {"LAUNCHCTL_USER": "alice"}
MEMBER = {"LAUNCHCTL_USER": "bob"}
TEMPLATE = {
    "resource_args": {"local-process": {"env": {"NGPU": "{{gpus}}"}}},
    "template_variables": {"gpus": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}},
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class Answer:
    def __init__(self, status: int, headers: Any, body: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def field_error(self, field: str) -> str | None:
        m = re.search(
            rf'<span class="field-error" data-field="{re.escape(field)}">(.*?)</span>', self.body
        )
        return unescape(m.group(1)) if m else None


def request(
    url: str,
    *,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with _opener.open(req, timeout=30) as resp:
            return Answer(resp.status, resp.headers, resp.read().decode())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read().decode())


def get(server: UiServer, path: str) -> Answer:
    return request(server.url(path), headers={"Authorization": f"Bearer {server.token}"})


def post(server: UiServer, path: str, data: dict[str, str], *, csrf: bool = True) -> Answer:
    form = dict(data, _csrf=server.token) if csrf else dict(data)
    return request(server.url(path), data=form, headers={"Authorization": f"Bearer {server.token}"})


def events(url: str, token: str, timeout: float = 30) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, as they come."""
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        for raw in resp:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}: nothing expected came within {timeout}s")
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])


def launch(*args: str, env: dict[str, str] | None = None) -> str:
    proc = cli("launch", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def hello_queue() -> str:
    cli("job", "create", "code", HELLO, "-E", "python train.py", "-n", "hello", check=True)
    return launch("-q", "default", "-j", "hello", "--set", "lr=0.3")


@pytest.fixture
def team() -> None:
    """alice runs team 'vision' (member bob) and its queue 'vision-gpu' with gpus 1..4."""
    cli("team", "create", "vision", env=ADMIN, check=True)
    cli("team", "add", "vision", "bob", env=ADMIN, check=True)
    cli("queue", "create", "vision-gpu", "--entity", "vision", "--config", json.dumps(TEMPLATE),
        env=ADMIN, check=True)  # fmt: skip
    cli("job", "create", "code", HELLO, "-E", "python train.py", "-n", "hello", "-e", "vision",
        env=ADMIN, check=True)  # fmt: skip


# -- the token -----------------------------------------------------------------------------


def test_every_page_needs_the_token_and_opening_the_url_sets_a_strict_cookie(
    ui_server: UiServer, hello_queue: str
) -> None:
    base, token = ui_server
    name = "launchctl_ui_" + base.rsplit(":", 1)[1]  # one cookie per server's port
    paths = ["/", "/runs", f"/runs/{hello_queue}", "/queues/default", "/sweeps", "/events",
             f"/runs/{hello_queue}/log/events", "/static/ui.js", "/nope"]  # fmt: skip
    for path in paths:
        wrong = ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{name}=x"},
                 {"Cookie": f"launchctl_ui_1={token}"})  # fmt: skip
        for headers in wrong:
            answer = request(base + path, headers=headers)
            assert answer.status == 401, (path, headers)
            assert "printed when it started" in answer.body
            assert token not in answer.body and hello_queue not in answer.body
    assert request(base + "/?token=wrong").status == 401
    # The token in a URL logs in only through "/" (which takes it out of the address bar).
    assert request(f"{base}/runs?token={token}").status == 401
    assert request(f"{base}/?token={token}", data={}).status == 401  # a POST is no login
    assert request(base + "/healthz").body == "ok"

    opened = request(f"{base}/?token={token}")
    assert opened.status == 303 and opened.headers["Location"] == "/"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith(f"{name}={token};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    page = request(base + "/runs", headers={"Cookie": f"other=1; {name}={token}"})
    assert page.status == 200 and f'id="run-{hello_queue}"' in page.body
    assert f'<meta name="csrf" content="{token}">' in page.body
    assert page.headers["Referrer-Policy"] == "no-referrer"  # the URL may hold the token
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_a_request_naming_another_host_is_refused(ui_server: UiServer) -> None:
    """A page whose DNS name was rebound to 127.0.0.1 reaches the port, not the view."""
    answer = request(
        ui_server.url("/runs"),
        headers={"Authorization": f"Bearer {ui_server.token}", "Host": "evil.example:8765"},
    )
    assert answer.status == 421
    assert get(ui_server, "/runs").status == 200


def test_changes_without_the_token_again_change_nothing(
    ui_server: UiServer, hello_queue: str, home: Path
) -> None:
    """A cookie alone (what a browser sends with another site's form) changes nothing; nor
    does a wrong token, nor no token at all."""
    base, token = ui_server
    before = table_counts(home)
    queue_before = cli_json("queue", "show", "default")["config"]
    changes = {
        f"/runs/{hello_queue}/cancel": {},
        f"/runs/{hello_queue}/rerun": {"set": "lr=9"},
        "/queues/default/launch": {"job": "hello"},
        "/queues/default/template": {"field": "gpus", "type": "integer", "maximum": "8"},
    }
    cookie = {"Cookie": f"launchctl_ui_{base.rsplit(':', 1)[1]}={token}"}
    for path, form in changes.items():
        assert request(base + path, data=form).status == 401
        assert request(base + path, data=dict(form, _csrf=token)).status == 401
        assert request(base + path, data=form, headers=cookie).status == 403
        assert request(base + path, data=dict(form, _csrf="wrong"), headers=cookie).status == 403
        bad_header = {**cookie, "X-Launchctl-Token": "wrong"}
        assert request(base + path, data=form, headers=bad_header).status == 403
        assert post(ui_server, path, form, csrf=False).status == 403
    assert table_counts(home) == before
    assert cli_json("runs", "show", hello_queue)["state"] == "queued"
    assert cli_json("queue", "show", "default")["config"] == queue_before

    # The same change with the token again goes through (the header works as the field).
    done = request(base + f"/runs/{hello_queue}/cancel", data={},
                   headers={**cookie, "X-Launchctl-Token": token})  # fmt: skip
    assert done.status == 303 and done.headers["Location"] == f"/runs/{hello_queue}"
    assert cli_json("runs", "show", hello_queue)["state"] == "stopped"


# -- roles ---------------------------------------------------------------------------------


def test_a_member_cannot_edit_a_template_and_gets_the_clis_refusal(
    team: None, start_ui: Callable[..., UiServer], home: Path
) -> None:
    server = start_ui(env=MEMBER)
    page = get(server, "/queues/vision-gpu")
    assert page.status == 200
    assert 'id="template-edit"' not in page.body and 'id="launch-form"' in page.body
    before = table_counts(home)
    config = cli_json("queue", "show", "vision-gpu")["config"]
    form = {"field": "gpus", "type": "integer", "minimum": "1", "maximum": "64"}
    answer = post(server, "/queues/vision-gpu/template", form)
    assert answer.status == 403
    by_cli = cli("queue", "template", "set", "vision-gpu", "gpus", "--type", "integer",
                 "--max", "64", env=MEMBER)  # fmt: skip
    assert by_cli.returncode == 1
    message = by_cli.stderr.strip().removeprefix("launchctl: error: ")
    assert "not an admin of entity 'vision'" in message
    assert message in unescape(answer.body)
    assert cli_json("queue", "show", "vision-gpu")["config"] == config
    assert table_counts(home) == before


def test_a_member_cannot_cancel_someone_elses_run_from_the_page(
    team: None, start_ui: Callable[..., UiServer], home: Path
) -> None:
    run_id = launch("-q", "vision-gpu", "-j", "vision/hello", env=ADMIN)
    server = start_ui(env=MEMBER)
    answer = post(server, f"/runs/{run_id}/cancel", {})
    assert answer.status == 403
    by_cli = cli("runs", "cancel", run_id, env=MEMBER)
    assert by_cli.returncode == 1
    assert by_cli.stderr.strip().removeprefix("launchctl: error: ") in unescape(answer.body)
    assert cli_json("runs", "show", run_id)["state"] == "queued"


def test_an_admin_edits_a_template_with_the_clis_validation(
    team: None, start_ui: Callable[..., UiServer]
) -> None:
    server = start_ui(env=ADMIN)
    assert 'id="template-edit"' in get(server, "/queues/vision-gpu").body
    bad = post(server, "/queues/vision-gpu/template",
               {"field": "gpus", "type": "integer", "minimum": "5", "maximum": "2"})  # fmt: skip
    assert bad.status == 400 and "minimum 5 is above maximum 2" in unescape(bad.body)
    ok = post(server, "/queues/vision-gpu/template",
              {"field": "gpus", "type": "integer", "minimum": "1", "maximum": "8"})  # fmt: skip
    assert ok.status == 303
    assert (
        cli_json("queue", "show", "vision-gpu")["config"]["template_variables"]["gpus"]["maximum"]
        == 8
    )
    tile = get(server, "/queues/vision-gpu").body
    assert re.search(r'<div class="tile" data-field="gpus">.*?max 8', tile, re.S)


def test_the_launch_form_refuses_an_out_of_range_value_in_place_and_launches_a_good_one(
    team: None, start_ui: Callable[..., UiServer], home: Path
) -> None:
    server = start_ui(env=MEMBER)
    page = get(server, "/queues/vision-gpu").body
    assert re.search(r'<input id="field-gpus" name="gpus" type="number" step="1"\s+min="1"'
                     r' max="4"', page)  # fmt: skip
    assert '<span class="limits">min 1; max 4; default 1</span>' in page
    before = table_counts(home)
    refused = post(server, "/queues/vision-gpu/launch", {"job": "vision/hello", "gpus": "9"})
    assert refused.status == 400
    assert refused.field_error("gpus") == "template variable gpus: value 9 is above the maximum 4"
    assert re.search(r'name="gpus"[^>]*value="9"', refused.body)  # what was typed stays
    assert table_counts(home) == before

    no_job = post(server, "/queues/vision-gpu/launch", {"job": "vision/nope", "gpus": "2"})
    assert no_job.status == 400 and "nope" in unescape(no_job.body)
    assert 'id="error"' in no_job.body and table_counts(home) == before

    done = post(server, "/queues/vision-gpu/launch", {"job": "vision/hello", "gpus": "2"})
    assert done.status == 303
    run_id = done.headers["Location"].removeprefix("/runs/")
    run = cli_json("runs", "show", run_id)
    assert run["spec"]["template_variables"] == {"gpus": "2"} or run["spec"][
        "template_variables"
    ] == {"gpus": 2}
    assert run["spec"]["author"] == "bob"  # it acts as the user who started the server


# -- what pages show -----------------------------------------------------------------------


def test_names_and_values_show_as_text(ui_server: UiServer, hello_queue: str) -> None:
    run_id = launch("-q", "default", "-j", "hello", "--name", "<script>alert(1)<script>",
                    "--set", "note=</script><img src=x onerror=alert(2)>")  # fmt: skip
    for path in ("/runs", f"/runs/{run_id}"):
        body = get(ui_server, path).body
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;script&gt;" in body
        assert "&lt;img src=x onerror=alert(2)&gt;" in body


def test_the_runs_page_filters_and_shows_the_differing_config_keys(
    ui_server: UiServer, hello_queue: str
) -> None:
    other = launch("-q", "default", "-j", "hello", "--set", "lr=0.1", "--set", "bs=8")
    body = get(ui_server, "/runs").body
    assert '<th class="cfg" data-key="lr">lr</th>' in body
    assert '<th class="cfg" data-key="bs">bs</th>' in body
    assert re.search(rf'<tr id="run-{other}" data-state="queued">', body)
    for cls in ("state", "duration", "gpus", "exit"):
        assert f'class="{cls}"' in body
    cli("runs", "cancel", other, check=True)
    stopped = get(ui_server, "/runs?state=stopped").body
    assert f'id="run-{other}"' in stopped and f'id="run-{hello_queue}"' not in stopped
    refused = get(ui_server, "/runs?state=bogus")
    assert refused.status == 400 and "unknown state 'bogus'" in unescape(refused.body)
    assert get(ui_server, "/runs/nosuchrun").status == 404


def test_the_overview_shows_each_queue_with_its_counts_by_state(
    ui_server: UiServer, hello_queue: str
) -> None:
    launch("-q", "default", "-j", "hello")
    cli("runs", "cancel", hello_queue, check=True)
    cli("queue", "create", "idle", "--resource", "local-process", check=True)
    cli("queue", "pause", "idle", check=True)
    body = get(ui_server, "/").body
    default = body.split('<section class="queue" data-queue="default">')[1].split("</section>")[0]
    assert '<span class="count" data-state="queued">1</span>' in default
    assert '<span class="count" data-state="stopped">1</span>' in default
    assert "no agent serving it" in default
    idle = body.split('<section class="queue" data-queue="idle">')[1].split("</section>")[0]
    assert 'data-paused="1"' in idle and 'data-paused="1"' not in default


def test_a_secret_shows_as_stars_in_the_spec_and_the_log(
    start_agent: StartAgent, start_ui: Callable[..., UiServer], tmp_path: Path
) -> None:
    value = "sk-ui-" + "9f3b2c7d1e" * 3
    assert cli("secret", "set", "api-key", input=value).returncode == 0
    config = {"resource_args": {"local-process": {"env": {"API_KEY": {"secret": "api-key"}}}}}
    cli("queue", "create", "secure", "--config", json.dumps(config), check=True)
    job = make_script(
        tmp_path / "job", "show.py", "import os\nprint('key:', os.environ['API_KEY'])\n"
    )
    run_id = launch("-q", "secure", "-u", str(job.parent), "-E", "python show.py")
    start_agent("-q", "secure")
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "finished", what="the run")
    server = start_ui()
    body = get(server, f"/runs/{run_id}").body
    assert value not in body
    spec = unescape(re.search(r'<pre id="spec">(.*?)</pre>', body, re.S).group(1))  # type: ignore[union-attr]
    assert '"API_KEY": "*** (secret api-key)"' in spec
    log = unescape(re.search(r'<pre id="log"[^>]*>(.*?)</pre>', body, re.S).group(1))  # type: ignore[union-attr]
    assert "key: ***" in log


def test_cancel_a_running_run_and_follow_its_log_and_state_live(
    start_agent: StartAgent, ui_server: UiServer, tmp_path: Path
) -> None:
    body = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"
    job = make_script(tmp_path / "job", "sleep.py", body)
    run_id = launch("-q", "default", "-u", str(job.parent), "-E", "python sleep.py")
    start_agent("-q", "default")
    page = get(ui_server, f"/runs/{run_id}").body
    src = unescape(re.search(r'data-src="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert src.startswith(f"/runs/{run_id}/log/events?offset=")
    stream = events(ui_server.url(f"/runs/{run_id}/log/events?offset=0"), ui_server.token)
    seen: list[tuple[str, str]] = []
    for event, data in stream:  # the log line arrives while the run runs
        seen.append((event, data))
        if event == "line" and "started" in data:
            break
    assert cli_json("runs", "show", run_id)["state"] == "running"
    assert 'id="cancel"' in get(ui_server, f"/runs/{run_id}").body
    done = post(ui_server, f"/runs/{run_id}/cancel", {})
    assert done.status == 303
    for event, data in stream:  # then the state moves to stopped, and the stream ends
        seen.append((event, data))
    states = [json.loads(d)["state"] for e, d in seen if e in ("state", "end")]
    assert states[-1] == "stopped" and "running" in states
    assert cli_json("runs", "show", run_id)["state"] == "stopped"


def test_a_built_runs_page_lists_the_builds_steps(
    docker: Any, ui_server: UiServer, tmp_path: Path
) -> None:
    fresh = os.urandom(6).hex()  # a step no earlier build cached: this run builds
    dockerfile = f"FROM {BUSYBOX}\nRUN echo lctest-ui-step {fresh}\nCOPY run.sh /run.sh\n"
    make_script(tmp_path / "boxed", "Dockerfile", dockerfile)
    make_script(tmp_path / "boxed", "run.sh", "echo ran in the image\n")
    cli("queue", "create", "box", "-r", "local-container", check=True)
    run_id = launch("-q", "box", "-u", str(tmp_path / "boxed"), "-E", "sh /run.sh")
    cli("agent", "-q", "box", "--burst", check=True, timeout=300)
    run = cli_json("runs", "show", run_id)
    try:
        assert run["state"] == "finished", run["reason"]
        body = get(ui_server, f"/runs/{run_id}").body
    finally:
        if run.get("image"):  # the image this test made (a step of its own), every tag
            with contextlib.suppress(Exception):
                for tag in docker.images.get(run["image"]).tags:
                    docker.images.remove(tag, force=True)
    steps = re.search(r'<ol id="build-steps">(.*?)</ol>', body, re.S)
    assert steps, body
    items = [unescape(i) for i in re.findall(r"<li>(.*?)</li>", steps.group(1))]
    assert any(i.startswith("launchctl: building ") for i in items), items
    assert any(re.match(rf"launchctl: build step \d+/\d+: RUN echo lctest-ui-step {fresh}", i)
               for i in items), items  # fmt: skip
    assert "ran in the image" in body  # the log tail, below the steps
    # A run that was not built has no build section.
    plain = launch("-q", "default", "-u", str(tmp_path / "boxed"), "-E", "sh run.sh")
    assert 'id="build-steps"' not in get(ui_server, f"/runs/{plain}").body


def test_rerun_with_edited_overrides_opens_the_new_run(
    ui_server: UiServer, hello_queue: str
) -> None:
    page = get(ui_server, f"/runs/{hello_queue}").body
    assert re.search(r'<textarea name="set" rows="3">lr=0.3</textarea>', page)
    answer = post(ui_server, f"/runs/{hello_queue}/rerun", {"set": "lr=0.05\nbs=16"})
    assert answer.status == 303
    new_id = answer.headers["Location"].removeprefix("/runs/")
    new = cli_json("runs", "show", new_id)
    assert new["rerun_of"] == hello_queue
    assert new["spec"]["overrides"]["run_config"] == {"lr": 0.05, "bs": 16}
    bad = post(ui_server, f"/runs/{hello_queue}/rerun", {"set": "no-equals-sign"})
    assert bad.status == 400 and 'id="error"' in bad.body


def test_events_stream_delivers_new_runs_and_state_changes(
    ui_server: UiServer, hello_queue: str
) -> None:
    stream = events(ui_server.url("/events"), ui_server.token)
    next(stream)  # the stream is open (its first event says so) before anything changes
    run_id = launch("-q", "default", "-j", "hello", "--set", "lr=0.7")
    cli("runs", "cancel", run_id, check=True)
    got: list[dict[str, Any]] = []
    for event, data in stream:
        if event == "run":
            got.append(json.loads(data))
            if got[-1]["id"] == run_id and got[-1]["state"] == "stopped":
                break
    mine = [g for g in got if g["id"] == run_id]
    assert mine[-1]["state"] == "stopped" and mine[-1]["queue"] == "default"
    assert mine[-1]["config"] == {"lr": "0.7"}
    assert {"id", "state", "queue", "name", "exit_code", "duration"} <= set(mine[-1])


def test_events_after_the_pages_own_event_id_bring_what_changed_before_the_stream_opened(
    ui_server: UiServer, hello_queue: str
) -> None:
    page = get(ui_server, "/runs").body
    after = re.search(r'data-after="(\d+)"', page).group(1)  # type: ignore[union-attr]
    later = launch("-q", "default", "-j", "hello", "--set", "lr=0.9")  # before any stream
    stream = events(ui_server.url(f"/events?after={after}"), ui_server.token)
    for event, data in stream:
        if event == "run":
            got = json.loads(data)
            assert got["id"] == later and got["state"] == "queued"  # hello_queue is older
            break


# -- starting the server -------------------------------------------------------------------


def test_a_non_loopback_host_needs_allow_remote(
    start_ui: Callable[..., UiServer], home: Path
) -> None:
    refused = cli("ui", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--allow-remote" in refused.stderr
    assert "Traceback" not in refused.stderr
    server = start_ui("--host", "0.0.0.0", "--allow-remote")
    assert server.base_url.startswith("http://0.0.0.0:")
    assert "warning: serving on 0.0.0.0" in server.log.read_text()


def test_a_port_in_use_is_refused_in_one_line(home: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = cli("ui", "--port", port, timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        f"launchctl: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


@pytest.mark.parametrize(
    "argv", [["ui", "--port", "0"], ["agent", "-q", "default", "--ui", "--burst"]]
)
def test_without_the_ui_extra_one_line_says_how_to_install_it(home: Path, argv: list[str]) -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"  # import starlette now raises ImportError
        f"sys.argv = ['launchctl', *{argv!r}]\n"
        "from launchctl.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr
        == "launchctl: error: the web view needs its extra: pip install 'launchctl[ui]'\n"
    )
    assert not (home / "launchctl.db").exists()  # refused before the store is opened


def test_the_plot_is_server_made_svg_with_labels_escaped() -> None:
    from launchctl.ui.plots import scatter

    trials = [
        {"id": 1, "seq": 1, "metric": 0.5, "params_flat": {"lr": 0.1, "opt": "<b>"}},
        {"id": 2, "seq": 2, "metric": 0.2, "params_flat": {"lr": 0.3, "opt": "sgd"}},
    ]
    svg = scatter("opt", "loss", trials, trials[1])
    assert svg.startswith('<svg class="plot" data-param="opt"') and svg.endswith("</svg>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<circle") == 2 and svg.count('class="best"') == 1
    assert "no scored trials" in scatter("lr", "loss", [], None)


def test_agent_ui_serves_the_view_beside_the_agent(
    start_agent: StartAgent, hello_queue: str
) -> None:
    agent = start_agent("-q", "default", "--ui", "--ui-port", "0")
    line = wait_for(
        lambda: next((ln for ln in agent.output().splitlines() if ln.startswith("launchctl ui: ")),
                     None),
        what="the agent's web view URL",
    )  # fmt: skip
    url = line.removeprefix("launchctl ui: ")
    base, _, token = url.partition("/?token=")
    assert base.startswith("http://127.0.0.1:") and len(token) >= 40
    wait_for(lambda: cli_json("runs", "show", hello_queue)["state"] == "finished", what="the run")
    assert request(base + "/runs").status == 401
    page = request(base + f"/runs/{hello_queue}", headers={"Authorization": f"Bearer {token}"})
    assert page.status == 200 and '<span id="run-state" class="state" data-state="finished">' in (
        page.body
    )


# Writes loss = (x - 2)^2 + y/10 to the metrics file launchctl reads (as tests/sweeps do).
TRAIN = """\
import json, os

cfg = json.loads(os.environ["WANDB_CONFIG"])
with open(os.environ["LAUNCHCTL_METRICS_FILE"], "a") as fh:
    fh.write(json.dumps({"loss": (cfg["x"] - 2) ** 2 + cfg["y"] / 10}) + "\\n")
"""
SWEEP = """\
job: trainer
method: grid
metric: {name: loss, goal: minimize}
parameters:
  x: {values: [1, 2, 3]}
  y: {values: [0, 1]}
"""


def test_the_sweep_page_sorts_trials_by_the_metric_marks_the_best_and_plots_each_parameter(
    ui_server: UiServer, tmp_path: Path
) -> None:
    cli("queue", "create", "q", "--resource", "local-process", check=True)
    code = make_script(tmp_path / "job", "train.py", TRAIN).parent
    cli("job", "create", "code", str(code), "-n", "trainer", "-E", "python train.py", check=True)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    sweep_id = cli("launch-sweep", str(tmp_path / "sweep.yaml"), "-q", "q", check=True)
    sweep_id = sweep_id.stdout.strip()
    cli("agent", "-q", "q", "--burst", check=True, timeout=300)
    assert f'href="/sweeps/{sweep_id}"' in get(ui_server, "/sweeps").body
    body = get(ui_server, f"/sweeps/{sweep_id}").body
    table = body.split('<table id="trials">')[1]
    metrics = [float(m) for m in re.findall(r'<td class="metric">([0-9.e-]+)</td>', table)]
    assert len(metrics) == 6 and metrics == sorted(metrics) and metrics[0] == 0
    assert table.count('class="best"') == 1
    best_row = re.search(r'<tr class="best"[^>]*>(.*?)</tr>', table, re.S)
    assert best_row and '<td class="metric">0</td>' in best_row.group(1)
    for param in ("x", "y"):
        svg = re.search(rf'<svg class="plot" data-param="{param}".*?</svg>', body, re.S)
        assert svg and svg.group(0).count("<circle") == 6
        assert svg.group(0).count('class="best"') == 1  # the best trial, drawn apart


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    """pyproject's package-data for launchctl.ui names each page and static file (a new
    one of another kind would be missing from an installed launchctl)."""
    import tomllib

    from tests.conftest import ROOT

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["launchctl.ui"]
    package = ROOT / "launchctl" / "ui"
    files = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert len(files) >= 10
    for path in files:
        assert any(path.relative_to(package).match(p) for p in patterns), path


# -- why a queued run waits, holds, stalled runs (issue 18) ---------------------------------


def test_hold_and_release_from_the_run_page_with_the_clis_role_check(
    team: None, start_ui: Callable[..., UiServer], home: Path
) -> None:
    """A member may not hold another's run over HTTP (the CLI's refusal, 403, nothing
    changed), nor hold any run without the page's token; their own run they hold and
    release, and the pages say it is held."""
    alices = launch("-q", "vision-gpu", "-j", "vision/hello", env=ADMIN)
    bobs = launch("-q", "vision-gpu", "-j", "vision/hello", env=MEMBER)
    server = start_ui(env=MEMBER)
    before = table_counts(home)
    refused = post(server, f"/runs/{alices}/hold", {})
    assert refused.status == 403
    by_cli = cli("runs", "hold", alices, env=MEMBER)
    assert by_cli.returncode == 1
    assert by_cli.stderr.strip().removeprefix("launchctl: error: ") in unescape(refused.body)
    assert post(server, f"/runs/{bobs}/hold", {}, csrf=False).status == 403
    assert table_counts(home) == before
    assert not cli_json("runs", "show", alices)["held"]
    assert not cli_json("runs", "show", bobs)["held"]

    page = get(server, f"/runs/{bobs}").body
    assert 'id="hold"' in page and 'id="release"' not in page
    assert post(server, f"/runs/{bobs}/hold", {}).status == 303
    assert cli_json("runs", "show", bobs)["held"]
    page = get(server, f"/runs/{bobs}").body
    assert 'id="release"' in page and 'id="hold"' not in page
    waits = page.split('<ul id="run-waits">')[1].split("</ul>")[0]
    assert f"held (`launchctl runs release {bobs}` lets it be claimed)" in unescape(waits)
    row = get(server, "/runs").body.split(f'<tr id="run-{bobs}"')[1].split("</tr>")[0]
    assert '<td class="state">queued (held)</td>' in row
    overview = get(server, "/").body
    queue = overview.split('data-queue="vision-gpu">')[1].split("</section>")[0]
    assert '<span class="count" data-waiting="held">1</span>' in queue
    assert post(server, f"/runs/{bobs}/release", {}).status == 303
    assert not cli_json("runs", "show", bobs)["held"]
    assert 'data-waiting="held"' not in get(server, "/").body
    cli("runs", "cancel", bobs, env=MEMBER, check=True)
    ended = post(server, f"/runs/{bobs}/hold", {})  # no longer queued: the CLI's line
    assert ended.status == 400
    assert f"run {bobs} is stopped: only a queued run can be held" in unescape(ended.body)
    assert 'id="hold"' not in ended.body


def test_the_run_page_says_what_a_run_waits_for_and_since_when_it_is_stalled(
    ui_server: UiServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    cli("queue", "create", "watched", "--config", json.dumps({"stall_after": "2s"}),
        check=True)  # fmt: skip
    body = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"
    job = make_script(tmp_path / "job", "sleep.py", body)
    running = launch("-q", "watched", "-u", str(job.parent), "-E", "python sleep.py")
    later = launch("-q", "watched", "-u", str(job.parent), "-E", "python sleep.py",
                   "--after-ok", running)  # fmt: skip
    waits = get(ui_server, f"/runs/{later}").body.split('<ul id="run-waits">')[1]
    assert f"run {running} to finish (--after-ok; it is queued)" in unescape(waits)
    row = get(ui_server, "/runs").body.split(f'<tr id="run-{later}"')[1].split("</tr>")[0]
    assert f'<td class="state">queued (after {running})</td>' in row
    start_agent("-q", "watched")
    wait_for(lambda: cli_json("runs", "show", running)["state"] == "running", what="the run")
    page = wait_for(
        lambda: 'id="run-stalled"' in (p := get(ui_server, f"/runs/{running}").body) and p,
        timeout=60, what="the silent run to be found stalled",
    )  # fmt: skip
    assert re.search(r'<dd id="run-stalled">no output since \d{4}-\d\d-\d\dT', page)
    overview = get(ui_server, "/").body
    queue = overview.split('data-queue="watched">')[1].split("</section>")[0]
    assert 'data-stalled="1">1</span>' in queue
    assert "(stalled: no output since" in overview.split('<table id="active">')[1]
    cli("runs", "cancel", running, check=True)
