"""Issue 20: never a stale image. A job image's content tag holds its base images' identity
(the local image ID, or the registry digest), so a base rebuilt or pushed anew under the
same name gives a rebuilt job image, and the same base content reuses it.

Driven through the CLI with a burst agent against the real Docker engine, with local base
images only (launchctl-test/*), bases of the test's own made from them with a file that
changes, and a registry of the test's own on another loopback port (the shared one on
127.0.0.1:5000 is never stopped). Every image a test makes is removed at its end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launchctl.images.dockerfile import from_images
from tests.conftest import BUSYBOX, PYTHON_IMAGE, cli, cli_json, make_script, wait_for


def _base(docker: Any, name: str, parent: str, version: str) -> str:
    """Build ``name`` FROM ``parent`` with /base-version holding ``version``; its image ID."""
    dockerfile = f"FROM {parent}\nCOPY base-version /base-version\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for file, data in (("Dockerfile", dockerfile), ("base-version", f"{version}\n")):
            info = tarfile.TarInfo(file)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    buf.seek(0)
    image, _ = docker.images.build(fileobj=buf, custom_context=True, tag=name, rm=True)
    return str(image.id)


@pytest.fixture
def made(docker: Any) -> Iterator[list[str]]:
    """Names (and job names: every image with that launchctl.job label) removed at the end."""
    names: list[str] = []
    yield names
    for name in names:
        for image in docker.images.list(filters={"label": f"launchctl.job={name}"}):
            with contextlib.suppress(Exception):
                docker.images.remove(image.id, force=True)
        with contextlib.suppress(Exception):
            docker.images.remove(name, force=True)


def _queue(name: str, builder: dict[str, Any]) -> None:
    cli("queue", "create", name, "-r", "local-container", "--config",
        json.dumps({"builder": builder}), check=True)  # fmt: skip


def _run(queue: str, code: Path, entry: str) -> dict[str, Any]:
    """Launch ``code`` on ``queue``, work it off with a burst agent; the finished run and
    its log."""
    run_id = cli("launch", "-q", queue, "-u", str(code), "-E", entry, check=True).stdout.strip()
    cli("agent", "-q", queue, "--burst", check=True, timeout=300)
    run = cli_json("runs", "show", run_id)
    log = Path(run["log_path"]).read_text()
    assert run["state"] == "finished", (run["reason"], log)
    return dict(run, log=log)


def _starting(run: dict[str, Any]) -> str:
    return next(e["message"] for e in run["events"] if e["to_state"] == "starting")


def _notes(run: dict[str, Any]) -> list[str]:
    return [e["message"] for e in run["events"] if e["from_state"] == e["to_state"]]


def _job(tmp_path: Path, what: str) -> Path:
    return tmp_path / f"lcstale{os.urandom(3).hex()}{what}"


# -- the scenario: builder.base_image rebuilt in place -------------------------------
def test_a_base_rebuilt_under_the_same_name_rebuilds_the_job_image_and_the_run_sees_it(
    docker: Any, tmp_path: Path, made: list[str]
) -> None:
    base = f"launchctl-test/stale-{os.urandom(3).hex()}:1"
    code = _job(tmp_path, "tpl")
    made += [base, code.name]
    first_id = _base(docker, base, PYTHON_IMAGE, "v1")
    make_script(code, "main.py", "print('base is', open('/base-version').read().strip())\n")
    _queue("box", {"base_image": base})

    first = _run("box", code, "python main.py")
    assert "base is v1" in first["log"]
    assert f"built (generated from template Dockerfile.j2) on base {base} {first_id}" in (
        _starting(first)
    )

    again = _run("box", code, "python main.py")  # same code, same base content: reused
    assert again["image"] == first["image"]
    assert "reused" in _starting(again)
    assert "base is v1" in again["log"]

    second_id = _base(docker, base, PYTHON_IMAGE, "v2")  # the same name, new content
    assert second_id != first_id
    changed = _run("box", code, "python main.py")
    assert changed["image"] != first["image"]
    assert f"image {changed['image']} built" in _starting(changed)
    assert "base is v2" in changed["log"]  # the run saw the new base
    assert f"launchctl: base {base} changed: {first_id} -> {second_id}" in changed["log"]
    shown = cli("runs", "show", changed["id"], check=True).stdout
    assert f"image:      {changed['image']}" in shown
    assert f"on base {base} {second_id}" in shown
    listed = [i for i in cli_json("images", "list") if changed["image"] in i["names"]]
    assert listed and listed[0]["bases"] == [f"{base} {second_id}"]
    table = cli("images", "list", check=True).stdout
    assert f"{base} {second_id[:19]}" in table  # sha256: and 12 hex digits


def test_a_two_stage_dockerfile_is_rebuilt_when_the_base_of_either_stage_changes(
    docker: Any, tmp_path: Path, made: list[str]
) -> None:
    stage = f"launchctl-test/stale-{os.urandom(3).hex()}:data"
    final = f"launchctl-test/stale-{os.urandom(3).hex()}:run"
    code = _job(tmp_path, "ms")
    made += [stage, final, code.name]
    _base(docker, stage, BUSYBOX, "data-v1")
    _base(docker, final, BUSYBOX, "run-v1")
    (code).mkdir()
    (code / "Dockerfile").write_text(
        f"# two stages\nFROM {stage} AS data\nRUN cp /base-version /data-version\n"
        f"FROM {final}\nCOPY --from=data /data-version /data-version\n"
    )
    _queue("ms", {})
    entry = "cat /data-version /base-version"
    first = _run("ms", code, entry)
    assert first["log"].count("-v1") == 2, first["log"]
    assert "reused" in _starting(_run("ms", code, entry))

    new_stage = _base(docker, stage, BUSYBOX, "data-v2")  # only the first stage's base
    changed = _run("ms", code, entry)
    assert changed["image"] != first["image"]
    assert "data-v2" in changed["log"] and "run-v1" in changed["log"]
    assert f"base {stage} changed: " in changed["log"] and f"-> {new_stage}" in changed["log"]
    assert f"{stage} {new_stage}" in _starting(changed) and final in _starting(changed)

    _base(docker, final, BUSYBOX, "run-v2")  # then the last stage's
    last = _run("ms", code, entry)
    assert last["image"] not in (first["image"], changed["image"])
    assert "data-v2" in last["log"] and "run-v2" in last["log"]


def test_accelerator_base_image_counts_too(docker: Any, tmp_path: Path, made: list[str]) -> None:
    base = f"launchctl-test/stale-{os.urandom(3).hex()}:cuda"
    code = _job(tmp_path, "acc")
    made += [base, code.name]
    _base(docker, base, PYTHON_IMAGE, "acc-v1")
    make_script(code, "main.py", "print(open('/base-version').read().strip())\n")
    _queue("acc", {"accelerator": {"base_image": base}})
    first = _run("acc", code, "python main.py")
    assert "acc-v1" in first["log"] and base in _starting(first)
    _base(docker, base, PYTHON_IMAGE, "acc-v2")
    changed = _run("acc", code, "python main.py")
    assert changed["image"] != first["image"] and "acc-v2" in changed["log"]


# -- a base that lives in a registry -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A registry of this test's own on a free loopback port (Debian's docker-registry, as
    scripts/services.sh starts the shared one); stopped (only it) at the end."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("docker-registry is not installed; run scripts/services.sh registry")
    port = _free_port()
    folder = tmp_path / "registry"
    (folder / "data").mkdir(parents=True)
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(folder / "log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"http://{address}/v2/", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=30, what=f"the test's registry on {address}")
        yield address, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_base_pushed_anew_under_the_same_tag_is_pulled_and_rebuilt_and_offline_the_local_copy_is_used(  # noqa: E501
    docker: Any, tmp_path: Path, made: list[str], own_registry: tuple[str, Any]
) -> None:
    address, registry = own_registry
    base = f"{address}/lab/base:1"
    other = f"launchctl-test/stale-{os.urandom(3).hex()}:pushed"  # "another machine's" build
    code = _job(tmp_path, "reg")
    made += [base, other, code.name]
    v1 = _base(docker, base, BUSYBOX, "reg-v1")
    docker.images.push(f"{address}/lab/base", tag="1")
    pulled = docker.images.get(base)
    assert pulled.attrs["RepoDigests"], "the push gave the base a registry digest"
    d1 = pulled.attrs["RepoDigests"][0].partition("@")[2]
    (code).mkdir()
    (code / "Dockerfile").write_text(f"FROM {base}\n")
    _queue("reg", {"base_refresh": "always"})
    _queue("lazy", {})  # the default: 12h

    first = _run("reg", code, "cat /base-version")
    assert "reg-v1" in first["log"]
    assert f"on base {base} {d1}" in _starting(first)  # the registry digest
    assert "reused" in _starting(_run("reg", code, "cat /base-version"))

    # Someone pushes a new base under the same tag; this engine still has v1 under that name.
    v2 = _base(docker, other, BUSYBOX, "reg-v2")
    docker.images.get(v2).tag(f"{address}/lab/base", "1")
    docker.images.push(f"{address}/lab/base", tag="1")
    docker.images.get(v1).tag(f"{address}/lab/base", "1")
    assert docker.images.get(base).id == v1
    d2 = next(
        d.partition("@")[2]
        for d in docker.images.get(v2).attrs["RepoDigests"]
        if d.startswith(f"{address}/")
    )
    assert d2 != d1

    changed = _run("reg", code, "cat /base-version")
    assert "reg-v2" in changed["log"], changed["log"]
    assert changed["image"] != first["image"]
    assert f"launchctl: base {base} changed in its registry: {d1} -> {d2}" in changed["log"]
    assert f"on base {base} {d2}" in _starting(changed)
    assert docker.images.get(base).id == v2  # pulled

    stop(registry)  # offline: the local copy is used, and the run's events say so
    offline = _run("reg", code, "cat /base-version")
    assert offline["image"] == changed["image"] and "reg-v2" in offline["log"]
    notes = [n for n in _notes(offline) if "could not be checked" in n]
    assert notes and f"base {base} could not be checked against its registry" in notes[0]
    assert f"the local copy {v2} is used" in notes[0]

    # builder.base_refresh's default (12h): checked a moment ago, so no request, no warning.
    lazy = _run("lazy", code, "cat /base-version")
    assert lazy["image"] == changed["image"]
    assert not [n for n in _notes(lazy) if "could not be checked" in n]


def test_a_base_only_in_the_registry_is_named_by_its_digest_and_offline_its_image_is_reused(
    docker: Any, tmp_path: Path, made: list[str], own_registry: tuple[str, Any]
) -> None:
    address, registry = own_registry
    base = f"{address}/lab/only:1"
    code = _job(tmp_path, "only")
    made += [base, code.name]
    _base(docker, base, BUSYBOX, "only-v1")
    docker.images.push(f"{address}/lab/only", tag="1")
    digest = docker.images.get(base).attrs["RepoDigests"][0].partition("@")[2]
    docker.images.remove(base)  # the registry has it, this engine does not
    (code).mkdir()
    (code / "Dockerfile").write_text(f"FROM {base}\n")
    _queue("only", {"base_refresh": "always"})

    first = _run("only", code, "cat /base-version")
    assert "only-v1" in first["log"]
    assert f"on base {base} {digest}" in _starting(first)  # from a manifest request
    assert "pulling" not in first["log"]  # launchctl pulled nothing: the build did

    stop(registry)
    offline = _run("only", code, "cat /base-version")
    assert offline["image"] == first["image"], offline["log"]  # the job image is reused
    assert [n for n in _notes(offline) if f"base {base} could not be checked" in n]


# -- refusals and the FROM parser (no engine) ---------------------------------------------------
@pytest.mark.parametrize("value", ["sometimes", "12", "h", "-1h", 5, ["always"]])
def test_a_bad_base_refresh_is_refused_in_one_line_and_nothing_is_written(value: Any) -> None:
    done = cli("queue", "create", "bad", "-r", "local-container", "--config",
               json.dumps({"builder": {"base_refresh": value}}))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "builder.base_refresh must be always, never" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert "bad" not in [q["name"] for q in cli_json("queue", "list")]


@pytest.mark.parametrize("value", ["always", "never", "12h", "30m", "7d"])
def test_good_base_refresh_values_are_taken(value: str) -> None:
    cli("queue", "create", f"q{value}", "-r", "local-container", "--config",
        json.dumps({"builder": {"base_refresh": value}}), check=True)  # fmt: skip


def test_every_stage_and_copy_from_image_is_a_base_and_args_are_filled_in() -> None:
    text = (
        "# syntax comment\nARG BASE=lab/base:1\nARG PY\n"
        "FROM --platform=linux/amd64 ${BASE} AS build\n"
        "RUN --mount=type=cache,target=/c,from=lab/cache:2 \\\n    make\n"
        "FROM build AS test\nCOPY --from=build /a /a\nCOPY --from=lab/tools:3 /t /t\n"
        "FROM python:$PY\nFROM scratch AS empty\n  from 127.0.0.1:5000/x/y:2 as Final\n"
        "COPY --from=0 /a /b\n# FROM commented:1\n"
    )
    assert from_images(text, {"PY": "3.11"}) == [
        "lab/base:1",
        "lab/cache:2",
        "lab/tools:3",
        "python:3.11",
        "127.0.0.1:5000/x/y:2",
    ]
    assert from_images("ARG B=a:1\nFROM $B\n", {"B": "b:2"}) == ["b:2"]  # a build arg wins
    assert from_images("FROM ${UNSET}\n") == ["${UNSET}"]  # left as written
