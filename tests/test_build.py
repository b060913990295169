"""The image builder against a real Docker engine, a package index on loopback and a registry.

Everything built here is named ``launchctl/lctest-<random>-...`` and labelled, and removed at
the end; the base images (launchctl-test/...) are kept. Tests that need no engine (Dockerfile
choice, tags, templates) run everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from launchctl.images import BuildError, BuildRequest, BuiltImage, ensure_image, plan_build
from tests.pkgindex import PACKAGE, PACKAGE_VALUE, Index

PY_BASE = "launchctl-test/python:bookworm"
BUSYBOX = "launchctl-test/busybox:latest"
REGISTRY = "localhost:5000"
PREFIX = f"lctest-{os.urandom(3).hex()}"  # in every image name this module builds
MAIN = f"import {PACKAGE}\nprint('value:', {PACKAGE}.VALUE)\n"


# -- fixtures: engine, package index ------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The real engine, or a skip that says how to start one; removes this module's images."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine: run scripts/services.sh all ({exc})")
    for base in (PY_BASE, BUSYBOX):
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            pytest.skip(f"base image {base} is missing: run scripts/services.sh all")
    yield client
    for image in client.images.list():
        for name in image.tags:
            if f"launchctl/{PREFIX}-" in name:
                with contextlib.suppress(docker.errors.NotFound):
                    client.images.remove(name, force=True)
    client.close()


@pytest.fixture(scope="module")
def registry(engine: Any) -> str:
    try:
        urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=5).close()
    except OSError as exc:
        pytest.skip(f"no registry on 127.0.0.1:5000: run scripts/services.sh all ({exc})")
    return REGISTRY


# -- helpers --------------------------------------------------------------------------------
def write_files(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def request(root: Path, name: str, **kwargs: Any) -> BuildRequest:
    kwargs.setdefault("entrypoint", ["python", "main.py"])
    kwargs.setdefault("default_base_image", PY_BASE)
    kwargs.setdefault("network", "host")  # the package index is on the host's loopback
    return BuildRequest(job_name=f"{PREFIX}-{name}", source_dir=root, **kwargs)


class Log:
    """Collects what the builder streams, as the agent's log file would."""

    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0]


def run_image(engine: Any, uri: str, *command: str) -> str:
    out = engine.containers.run(
        uri, list(command) or None, remove=True, labels={"launchctl.test": PREFIX}
    )
    return bytes(out).decode()


def step_state(log: str, needle: str) -> str:
    """'CACHED' or 'DONE' for the BuildKit step whose title contains ``needle``."""
    for match in re.finditer(r"^#(\d+) \[[^\]]*\] (.*)$", log, re.MULTILINE):
        if needle in match.group(2):
            step = match.group(1)
            if re.search(rf"^#{step} CACHED$", log, re.MULTILINE):
                return "CACHED"
            if re.search(rf"^#{step} DONE", log, re.MULTILINE):
                return "DONE"
            return "?"
    raise AssertionError(f"no build step with {needle!r} in the log:\n{log}")


@dataclass
class Built:
    root: Path
    req: BuildRequest
    image: BuiltImage
    log: Log


@pytest.fixture(scope="module")
def index_job(engine: Any, index: Index, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One code job, built once: its requirements.txt names the index in a line of its own.
    Its first line is a comment naming this module's run, so its pip layer is this build's
    own: another module's index may have had the same port, and left the same layer in
    the engine's build cache (the tests below need the first build to run pip)."""
    root = write_files(
        tmp_path_factory.mktemp("index-job"),
        {
            "requirements.txt": f"# {PREFIX}\n--index-url {index.simple}\n{PACKAGE}\n",
            "main.py": MAIN,
            "util.py": "X = 1\n",
        },
    )
    req = request(root, "index")
    log = Log()
    return Built(root, req, ensure_image(req, log), log)


# -- a code job with requirements from a local index ----------------------------------------
def test_requirements_index_url_line_installs_the_wheel_and_the_image_imports_it(
    engine: Any, index_job: Built
) -> None:
    image = index_job.image
    assert image.built and not image.pushed
    assert image.uri == f"launchctl/{PREFIX}-index:{image.tag}"
    assert image.dockerfile_source == "generated from template Dockerfile.j2"
    assert index_job.log.first_line == (
        f"launchctl: building {image.uri} with generated from template Dockerfile.j2"
    )
    assert f"Successfully installed {PACKAGE}-1.0" in index_job.log.text
    assert run_image(engine, image.uri) == f"value: {PACKAGE_VALUE}\n"
    # The ENTRYPOINT is the job's entrypoint; the code runs as a non-root user in a workdir.
    inspected = engine.images.get(image.uri).attrs["Config"]
    assert inspected["Entrypoint"] == ["python", "main.py"]
    assert inspected["User"] == "launchctl"
    assert inspected["WorkingDir"] == "/launchctl/code"
    assert inspected["Labels"]["launchctl.job"] == f"{PREFIX}-index"


@pytest.mark.parametrize(
    "case",
    ["find-links line in requirements.txt", "request index_url with pyproject dependencies"],
)
def test_index_settings_from_requirements_or_request_install_the_wheel(
    engine: Any, index: Index, tmp_path: Path, case: str
) -> None:
    if case.startswith("find-links"):
        files = {"requirements.txt": f"--no-index\n--find-links {index.files}\n{PACKAGE}\n"}
        req_kwargs: dict[str, Any] = {}
    else:
        files = {"pyproject.toml": f'[project]\nname = "x"\ndependencies = ["{PACKAGE}"]\n'}
        req_kwargs = {"index_url": index.simple}
    root = write_files(tmp_path / "job", {**files, "main.py": MAIN})
    log = Log()
    image = ensure_image(request(root, "settings", **req_kwargs), log)
    assert image.built
    if "pyproject" in case:
        assert "--index-url" in log.text and ".launchctl-requirements.txt" in log.text
    assert run_image(engine, image.uri) == f"value: {PACKAGE_VALUE}\n"


def test_unchanged_code_is_reused_and_a_code_change_rebuilds_only_after_pip(
    engine: Any, index_job: Built, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(index_job.root, root)  # a new working copy of the same code, new mtimes
    req = replace(index_job.req, source_dir=root)
    again = Log()
    image = ensure_image(req, again)
    assert (image.built, image.uri) == (False, index_job.image.uri)
    assert again.text == (
        f"launchctl: {image.uri} exists locally (generated from template Dockerfile.j2):"
        " nothing to build\n"
    )

    (root / "util.py").write_text("X = 2\n")
    changed = Log()
    rebuilt = ensure_image(req, changed)
    assert rebuilt.built and rebuilt.tag != index_job.image.tag
    assert step_state(index_job.log.text, "pip install") == "DONE"
    assert step_state(changed.text, "pip install") == "CACHED"
    assert step_state(changed.text, "COPY --chown=launchctl . ") == "DONE"
    assert "Successfully installed" not in changed.text


# -- which Dockerfile -------------------------------------------------------------------------
def _user_dockerfile(which: str) -> str:
    return f"FROM {BUSYBOX}\nLABEL lctest.which={which}\n"


def test_dockerfile_precedence_override_then_job_then_dockerfile_wandb_then_template(
    engine: Any, tmp_path: Path
) -> None:
    root = write_files(
        tmp_path / "job",
        {
            "docker/Custom.dockerfile": _user_dockerfile("override"),
            "Dockerfile": _user_dockerfile("job"),
            "src/Dockerfile.wandb": _user_dockerfile("wandb"),
            "Dockerfile.wandb": _user_dockerfile("root-wandb"),  # not beside the entrypoint
            "src/train.py": "print('hi')\n",
        },
    )
    entry = ["python", "src/train.py"]
    cases = [
        ("override", "docker/Custom.dockerfile", "override (-D docker/Custom.dockerfile)"),
        ("job", None, "job Dockerfile"),
        ("wandb", None, "Dockerfile.wandb beside the entrypoint (src/Dockerfile.wandb)"),
    ]
    for which, override, source in cases:
        log = Log()
        image = ensure_image(request(root, "prec", entrypoint=entry, dockerfile=override), log)
        assert image.built and image.dockerfile_source == source
        assert log.first_line == f"launchctl: building {image.uri} with {source}"
        assert engine.images.get(image.uri).labels["lctest.which"] == which
        if which == "job":
            (root / "Dockerfile").unlink()
        if which == "wandb":
            (root / "src/Dockerfile.wandb").unlink()
    plan = plan_build(request(root, "prec", entrypoint=entry))
    assert plan.dockerfile.source == "generated from template Dockerfile.j2"
    assert plan.dockerfile.text.startswith(f"FROM {PY_BASE}\n")


def test_dockerfile_wandb_is_taken_from_the_root_for_a_non_python_entrypoint(
    tmp_path: Path,
) -> None:
    root = write_files(tmp_path, {"Dockerfile.wandb": "FROM x\n", "bin/run.sh": "echo\n"})
    plan = plan_build(request(root, "sh", entrypoint=["bash", "bin/run.sh"]))
    assert plan.dockerfile.source == "Dockerfile.wandb beside the entrypoint"
    assert plan.dockerfile.path == "Dockerfile.wandb"
    # python -m: no script file, so the root too.
    plan = plan_build(request(root, "m", entrypoint=["python", "-m", "pkg.train"]))
    assert plan.dockerfile.path == "Dockerfile.wandb"


@pytest.mark.parametrize("override", ["nope/Dockerfile", "../Dockerfile", "/etc/hostname"])
def test_a_missing_or_outside_override_is_a_clear_error(tmp_path: Path, override: str) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    root = write_files(tmp_path / "job", {"main.py": ""})
    with pytest.raises(
        BuildError, match=r"dockerfile .*(not among the job's files|relative|outside)"
    ):
        ensure_image(request(root, "missing", dockerfile=override), Log())


# -- accelerator base images -----------------------------------------------------------------
def test_accelerator_base_image_with_python_builds_without_apt(engine: Any, tmp_path: Path) -> None:
    root = write_files(tmp_path / "job", {"main.py": "import sys; print(sys.prefix)\n"})
    log = Log()
    image = ensure_image(request(root, "accel", base_image=PY_BASE), log)
    assert image.built
    assert "launchctl: the base image has python3" in log.text
    assert "Reading package lists" not in log.text  # apt-get did not run (it has no network)
    assert run_image(engine, image.uri) == "/launchctl/venv\n"


def test_accelerator_base_image_without_apt_get_fails_with_a_clear_message(
    engine: Any, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "job", {"main.py": ""})
    with pytest.raises(BuildError) as info:
        ensure_image(request(root, "noapt", base_image=BUSYBOX), Log())
    first = str(info.value).splitlines()[0]
    assert "has no python3 and no apt-get" in first
    assert "accelerator base images must be Debian-like, with apt-get" in first


# -- failures ---------------------------------------------------------------------------------
def test_build_error_names_the_failed_step_and_progress_goes_to_stderr(
    engine: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 12, items 5 and 9: the error is one line (the step, its last output, the exit
    code), the lines that show it are ``log_tail``; stderr gets the steps, not BuildKit's log."""
    root = write_files(
        tmp_path / "job",
        {"Dockerfile": f"FROM {BUSYBOX}\nRUN echo lctest-before-failure && exit 3\n"},
    )
    log = Log()
    with pytest.raises(BuildError) as info:
        ensure_image(request(root, "fails"), log, progress=True)
    err = info.value
    assert "\n" not in str(err)
    assert str(err).startswith(f"image build of launchctl/{PREFIX}-fails:")
    assert str(err).endswith(
        "failed at build step 2/2 (RUN echo lctest-before-failure && exit 3): exit code: 3;"
        " its last output: lctest-before-failure"
    )
    assert err.log_tail == "lctest-before-failure"
    assert "lctest-before-failure" in log.text  # no build_log: the raw output is in the log
    stderr = capfd.readouterr().err
    assert "launchctl: build step 2/2: RUN echo lctest-before-failure && exit 3 [" in stderr
    assert "#" not in stderr


def test_an_unreachable_engine_is_a_build_error_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    root = write_files(tmp_path / "job", {"main.py": ""})
    with pytest.raises(BuildError, match="the Docker engine is not reachable"):
        ensure_image(request(root, "down"), Log())


# -- registry ---------------------------------------------------------------------------------
def test_push_to_the_registry_then_found_there_without_a_build(
    engine: Any, registry: str, tmp_path: Path
) -> None:
    import docker

    root = write_files(tmp_path / "job", {"Dockerfile": _user_dockerfile(PREFIX)})
    req = request(root, "push", registry=registry)
    log = Log()
    image = ensure_image(req, log)
    assert (image.built, image.pushed) == (True, True)
    assert image.uri == f"{registry}/launchctl/{PREFIX}-push:{image.tag}"
    manifest = urllib.request.Request(
        f"http://127.0.0.1:5000/v2/launchctl/{PREFIX}-push/manifests/{image.tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert urllib.request.urlopen(manifest, timeout=10).status == 200

    engine.images.remove(image.uri, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(image.uri)
    again = Log()
    found = ensure_image(req, again)
    assert (found.built, found.pushed, found.uri) == (False, False, image.uri)
    assert "exists in the registry" in again.first_line
    engine.images.pull(image.uri)  # what the runner does with it
    assert engine.images.get(image.uri).labels["lctest.which"] == PREFIX


# -- tags and templates (no engine needed) ----------------------------------------------------
def test_tag_is_stable_for_the_same_inputs_and_changes_with_each_input(tmp_path: Path) -> None:
    files = {"requirements.txt": "numpy\n", "main.py": MAIN}
    a = write_files(tmp_path / "a", files)
    b = write_files(tmp_path / "b", files)  # same content elsewhere, written later
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    tag = plan_build(request(a, "t")).tag
    assert plan_build(request(b, "t")).tag == tag
    assert plan_build(request(b, "other-name")).tag == tag  # the name is not content
    changed = {
        "base image": plan_build(request(b, "t", default_base_image=BUSYBOX)).tag,
        "accelerator": plan_build(request(b, "t", base_image=PY_BASE)).tag,
        "build args": plan_build(request(b, "t", build_args={"A": "1"})).tag,
        "index": plan_build(request(b, "t", index_url="http://127.0.0.1:1/simple")).tag,
        "entrypoint": plan_build(request(b, "t", entrypoint=["python", "other.py"])).tag,
    }
    (b / "requirements.txt").write_text("numpy\nscipy\n")
    changed["requirements"] = plan_build(request(b, "t")).tag
    (b / "requirements.txt").write_text("numpy\n")
    (b / "main.py").write_text(MAIN + "# changed\n")
    changed["code"] = plan_build(request(b, "t")).tag
    assert tag not in changed.values()
    assert len(set(changed.values())) == len(changed), changed


def test_pyproject_requirements_file_does_not_change_the_tag_once_written(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"pyproject.toml": '[project]\ndependencies = ["a>=1"]\n'})
    before = plan_build(request(root, "p"))
    generated = before.dockerfile.files[".launchctl-requirements.txt"]
    assert b"a>=1\n" in generated
    (root / ".launchctl-requirements.txt").write_bytes(generated)  # what a build writes
    assert plan_build(request(root, "p")).tag == before.tag


def test_generated_dockerfile_installs_requirements_before_copying_code(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"requirements.txt": "numpy\n"})
    text = plan_build(request(root, "g", find_links=["http://10.1.2.3/wheels/"])).dockerfile.text
    assert "# syntax" not in text
    lines = text.splitlines()
    copy_reqs = lines.index("COPY requirements.txt /launchctl/requirements.txt")
    pip = next(
        i for i, line in enumerate(lines) if "--mount=type=cache,target=/root/.cache/pip" in line
    )
    copy_code = lines.index("COPY --chown=launchctl . /launchctl/code")
    assert copy_reqs < pip < copy_code < lines.index('ENTRYPOINT ["python", "main.py"]')
    assert "--find-links http://10.1.2.3/wheels/ --trusted-host 10.1.2.3" in text
    assert "apt-get" not in text  # only accelerator base images install Python


def test_user_template_folder_comes_first_and_can_extend_the_packaged_one(
    tmp_path: Path,
) -> None:
    templates = write_files(
        tmp_path / "templates",
        {
            "Dockerfile.j2": (
                '{% extends "default:Dockerfile.j2" %}\n'
                "{% block code %}\nLABEL team=vision\n{{ super() }}{% endblock %}\n"
            )
        },
    )
    root = write_files(tmp_path / "job", {"main.py": ""})
    plan = plan_build(request(root, "u", template_dir=templates))
    assert plan.dockerfile.source == f"generated from template Dockerfile.j2 in {templates}"
    assert "LABEL team=vision\nUSER launchctl\n" in plan.dockerfile.text
    assert plan.dockerfile.text.startswith(f"FROM {PY_BASE}\n")

    (templates / "Dockerfile.j2").write_text("# syntax=docker/dockerfile:1\nFROM x\n")
    with pytest.raises(BuildError, match="syntax="):
        plan_build(request(root, "u", template_dir=templates))


def test_an_image_that_exists_only_locally_is_pushed_without_a_build(
    engine: Any, registry: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "job", {"Dockerfile": _user_dockerfile("late")})
    # Credentials go to the engine with the registry calls (this registry ignores them).
    auth = {"username": "lctest", "password": "lctest-secret"}
    req = request(root, "late", registry=registry, registry_auth=auth)
    assert "lctest-secret" not in repr(req)
    repo, tag = plan_build(req).uri.rsplit(":", 1)
    engine.images.get(BUSYBOX).tag(repo, tag)  # e.g. built by an earlier run whose push failed
    log = Log()
    image = ensure_image(req, log)
    assert (image.built, image.pushed) == (False, True)
    assert f"launchctl: pushing {image.uri}" in log.text
    assert engine.images.get_registry_data(image.uri).id


def test_a_failed_push_is_a_build_error(engine: Any, tmp_path: Path) -> None:
    root = write_files(tmp_path / "job", {"Dockerfile": _user_dockerfile("nopush")})
    with pytest.raises(BuildError, match=r"^push failed: 127\.0\.0\.1:1/launchctl/.*refused"):
        ensure_image(request(root, "nopush", registry="127.0.0.1:1"), Log())


# -- BuildKit client discovery (fake docker clients, no engine needed) -----------------------
def _fake_docker(folder: Path, script: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "docker"
    path.write_text(f"#!/bin/sh\n{script}\nexit 1\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fresh_discovery() -> Iterator[None]:
    from launchctl.images import engine as build_engine

    build_engine.build_cli.cache_clear()
    yield
    build_engine.build_cli.cache_clear()


@pytest.mark.usefixtures("fresh_discovery")
def test_buildx_is_preferred_and_a_client_without_it_falls_back_to_builtin_buildkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchctl.images import engine as build_engine

    # First on PATH: a new client without buildx (refuses DOCKER_BUILDKIT=1 docker build).
    first = _fake_docker(tmp_path / "path", "")
    # The fallback: an older client with BuildKit built in.
    old = _fake_docker(tmp_path / "usr", '[ "$1" = build ] && [ "$DOCKER_BUILDKIT" = 1 ] && exit 0')
    monkeypatch.setenv("PATH", str(first.parent))
    monkeypatch.setattr(build_engine, "FALLBACK_CLIENT", str(old))
    cli = build_engine.build_cli()
    assert (cli.argv, cli.env) == ((str(old), "build"), (("DOCKER_BUILDKIT", "1"),))

    build_engine.build_cli.cache_clear()
    first.write_text('#!/bin/sh\n[ "$1" = buildx ] && exit 0\nexit 1\n')
    assert build_engine.build_cli().argv == (str(first), "buildx", "build", "--load")


@pytest.mark.usefixtures("fresh_discovery")
def test_no_docker_client_at_all_says_the_engine_is_not_reachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchctl.images import engine as build_engine

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(build_engine, "FALLBACK_CLIENT", str(tmp_path / "missing"))
    with pytest.raises(BuildError, match="the Docker engine is not reachable: no docker"):
        build_engine.build_cli()
