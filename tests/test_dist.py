"""The single file and the wheelhouse an air-gapped lab carries in (issue 17).

Built once per session by the code ``nox -s dist`` runs (scripts/dist.py; cached under
.cache/dist/ by source hash, so a rerun is quick), then tried as a lab machine sees them:
copied into a container with no network made from a plain Debian image with python3, and
run there. The last test walks the whole air-gapped path on the host's engine: a base image
carried as a ``docker save`` tar, a code job built from a local wheel folder only.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import (
    PYTHON_IMAGE,
    ROOT,
    cli_json,
    make_script,
    services_required,
    wait_for,
)

LAB_HOME = "/tmp/lab"  # the lab user's home inside the container
FIRST_COMMAND = ["launch", "-u", "examples/hello", "-E", "python train.py", "--set", "lr=0.5"]


def load_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launchctl_dist", ROOT / "scripts" / "dist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dist() -> ModuleType:
    return load_dist()


def built(make: Any) -> Path:
    """What scripts/dist.py makes; the first build needs a package index (PyPI): without
    one, a laptop skips these tests, and CI (which has one) fails."""
    try:
        return Path(make())
    except subprocess.CalledProcessError as exc:
        if services_required():
            raise
        pytest.skip(f"scripts/dist.py could not build (no package index?): {exc}")


@pytest.fixture(scope="module")
def single_file(dist: ModuleType) -> Path:
    """dist/launchctl as nox builds it."""
    return built(dist.build_zipapp)


@pytest.fixture(scope="module")
def wheelhouse(dist: ModuleType) -> Path:
    return built(dist.build_wheelhouse)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CACHE_HOME the tests that only use the file share: it unpacks once there."""
    return tmp_path_factory.mktemp("xdg-cache")


def run_file(file: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


# -- the bootstrap on this machine: version, start-up, the extract folder ---------------------


def test_the_file_says_how_it_was_built_and_unpacks_once_into_a_private_folder(
    single_file: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    first = run_file(single_file, "--version", env=env)
    assert first.returncode == 0, first.stderr
    line = first.stdout.strip()
    assert line.startswith("launchctl 0.") and "(zipapp built " in line, line
    assert f"python {sys.version_info[0]}.{sys.version_info[1]}" in line
    root = cache / "launchctl" / "dist"
    (build,) = root.iterdir()
    assert root.stat().st_mode & 0o777 == 0o700
    assert build.stat().st_mode & 0o777 == 0o700
    inode = build.stat().st_ino
    again = run_file(single_file, "runs", "list", env={**env, "LAUNCHCTL_HOME": str(tmp_path)})
    assert again.returncode == 0, again.stderr
    assert [p.name for p in root.iterdir()] == [build.name]
    assert build.stat().st_ino == inode  # used as it was: not unpacked again
    # The pip install says so, too.
    pip = subprocess.run(
        [sys.executable, "-m", "launchctl", "--version"], capture_output=True, text=True
    )
    assert pip.stdout.strip().startswith("launchctl 0.") and "(pip, python " in pip.stdout


def test_launch_async_from_the_file_runs_its_detached_agent(
    single_file: Path, tmp_path: Path, home: Path, unpacked: Path
) -> None:
    # The detached agent is a second python process: it must find the launchctl the file
    # unpacked. So: a python with no launchctl of its own (not this venv's), away from the
    # checkout (a `-c` child has its working folder on its path).
    python = getattr(sys, "_base_executable", "") or "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import launchctl"], cwd=tmp_path, capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{python} has a launchctl of its own: the test would prove nothing")
    env = {**os.environ, "XDG_CACHE_HOME": str(unpacked), "LAUNCHCTL_HOME": str(home)}
    hello = str(ROOT / "examples" / "hello")
    proc = subprocess.run(
        [python, str(single_file), "launch", "--async", "-u", hello, "-E", "python train.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()

    def ended() -> Any:
        run = cli_json("runs", "show", run_id)
        return run if run["state"] in ("finished", "failed") else None

    run = wait_for(ended, timeout=60)
    assert (run["state"], run["exit_code"]) == ("finished", 0), run


def plant(folder: Path, marker: Path) -> None:
    """Code another user hopes the file will import: it would write the marker."""
    package = folder / "launchctl" / "cli"
    package.mkdir(parents=True)
    (folder / "launchctl" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('planted')\ndef main(): return 0\n"
    )
    (folder / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'w').write('pth')\n")


def build_name(file: Path) -> str:
    import zipfile

    with zipfile.ZipFile(file) as zf:
        text = zf.read("__main__.py").decode()
    build = text.split('BUILD = "', 1)[1].split('"', 1)[0]
    return f"{build}-{sys.implementation.cache_tag}"  # one folder per build and Python


@pytest.mark.parametrize("case", ["open-to-others", "another-owner", "link", "open-parent"])
def test_the_file_refuses_an_extract_folder_another_user_could_plant_code_in(
    single_file: Path, tmp_path: Path, case: str
) -> None:
    cache = tmp_path / "cache"
    root = cache / "launchctl" / "dist"
    marker = tmp_path / "marker"
    elsewhere = tmp_path / "theirs"
    plant(elsewhere / build_name(single_file), marker)
    if case == "open-to-others":  # a folder made with umask 0 by a careless script
        root.mkdir(parents=True)
        root.chmod(0o777)
        plant(root / build_name(single_file), marker)
    elif case == "another-owner":  # made first by another user, with the same name
        if os.getuid() != 0:
            pytest.skip("making a folder that belongs to another user needs root")
        root.mkdir(parents=True, mode=0o700)
        plant(root / build_name(single_file), marker)
        for path in [root, *root.rglob("*")]:
            os.chown(path, 4242, 4242)
    elif case == "link":  # a link to a folder of theirs
        root.parent.mkdir(parents=True)
        elsewhere.chmod(0o700)
        root.symlink_to(elsewhere)
    else:  # XDG_CACHE_HOME in a folder anyone may write to (not sticky, unlike /tmp)
        cache = tmp_path / "shared"
        cache.mkdir()
        cache.chmod(0o777)
    proc = run_file(single_file, "--version", env={"XDG_CACHE_HOME": str(cache)})
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("launchctl: error: will not "), proc.stderr
    assert not marker.exists()
    if case == "open-parent":
        assert not (cache / "launchctl" / "dist" / build_name(single_file)).exists()


def test_the_file_on_a_python_older_than_3_11_says_so_in_one_line(single_file: Path) -> None:
    # The bootstrap is what an old python3 reads first: it must parse there, and stop at
    # the version check with one line, before it unpacks anything.
    import ast
    import zipfile

    with zipfile.ZipFile(single_file) as zf:
        source = zf.read("__main__.py").decode()
    ast.parse(source, feature_version=(3, 6))
    old = (
        "import sys; sys.version_info = (3, 9, 18, 'final', 0); "
        f"exec(compile({source!r}, {str(single_file)!r} + '/__main__.py', 'exec'))"
    )
    proc = subprocess.run([sys.executable, "-c", old], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("launchctl: error: this file needs python3 3.11 or newer;")
    assert "this is 3.9" in proc.stderr and len(proc.stderr.splitlines()) == 1


# -- as an air-gapped machine sees it: a container with no network ----------------------------


def tar_of(files: dict[str, Path]) -> bytes:
    """A tar holding each file or folder under its name, readable by any user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files.items():

            def readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 0
                info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
                return info

            tar.add(path, arcname=f"carry/{name}", filter=readable)
    return buf.getvalue()


def run_offline(docker: Any, files: dict[str, Path], script: str) -> tuple[int, str]:
    """SCRIPT as a plain user (lab, uid 1000, home /tmp/lab) in a --network none container
    of the Debian image with python3, after copying FILES into /tmp/carry/."""
    with tempfile.TemporaryDirectory() as tmp:
        run_sh = Path(tmp) / "run.sh"
        run_sh.write_text(f"set -eu\nexport PATH=$HOME/bin:/usr/local/bin:/usr/bin:/bin\n{script}")
        container = docker.containers.create(
            PYTHON_IMAGE,
            [
                "sh",
                "-euc",
                f"useradd -m -u 1000 -d {LAB_HOME} lab; exec su lab -c 'sh /tmp/carry/run.sh'",
            ],
            network_mode="none",
            labels={"launchctl.test": "dist"},
        )
        try:
            assert container.put_archive("/tmp", tar_of({**files, "run.sh": run_sh}))
            container.start()
            code = container.wait(timeout=600)["StatusCode"]
            return code, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)


def user_extras() -> list[str]:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return sorted(name for name in extras if name not in ("test", "dev"))


def test_the_single_file_runs_the_first_example_in_a_container_with_no_network(
    docker: Any, single_file: Path
) -> None:
    code, out = run_offline(
        docker,
        {"launchctl": single_file, "examples/hello": ROOT / "examples" / "hello"},
        f"""
        mkdir -p $HOME/bin && cp /tmp/carry/launchctl $HOME/bin/ && cp -r /tmp/carry/examples $HOME/
        cd $HOME && ls -l $HOME/bin/launchctl && launchctl --version
        launchctl {" ".join(f"'{a}'" for a in FIRST_COMMAND)}
        stat -c 'unpacked into %n %a' $HOME/.cache/launchctl/dist
        """,
    )
    assert code == 0, out
    assert "(zipapp built " in out and "python 3.11" in out, out
    assert "epoch 3/3: loss 0.1250" in out and "finished (exit code 0)" in out, out
    assert f"unpacked into {LAB_HOME}/.cache/launchctl/dist 700" in out, out


def test_the_wheelhouse_installs_launchctl_and_holds_its_extras_with_no_network(
    docker: Any, wheelhouse: Path
) -> None:
    extras = ",".join(user_extras())
    code, out = run_offline(
        docker,
        {"wheelhouse": wheelhouse, "examples/hello": ROOT / "examples" / "hello"},
        f"""
        cp -r /tmp/carry/examples $HOME/ && cd $HOME
        python3 -m venv venv
        # Every extra resolves from the wheelhouse alone (resolving is enough: installing
        # numpy, matplotlib and optuna would take a minute); launchctl itself is installed.
        venv/bin/pip install -q --no-index --find-links /tmp/carry/wheelhouse --dry-run \
            'launchctl[{extras}]'
        echo "extras resolve: {extras}"
        venv/bin/pip install -q --no-index --find-links /tmp/carry/wheelhouse launchctl
        venv/bin/launchctl --version
        venv/bin/launchctl {" ".join(f"'{a}'" for a in FIRST_COMMAND)}
        """,
    )
    assert code == 0, out
    assert f"extras resolve: {extras}" in out and "(pip, python 3.11" in out, out
    assert "epoch 3/3: loss 0.1250" in out and "finished (exit code 0)" in out, out


# -- the whole air-gapped path, once ---------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A folder over HTTP on loopback: how a lab serves its wheel folder to builds."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def carry_image(docker: Any, image: str, tag: str, folder: Path) -> Path:
    """``docker save IMAGE`` to a file, its tag rewritten to TAG, and ``docker load`` of
    it: the base image a lab machine gets on a disk, not from a registry."""
    saved = folder / "base.tar"
    with saved.open("wb") as f:
        for chunk in docker.images.get(image).save(named=True):
            f.write(chunk)
    carried = folder / "carried.tar"
    with tarfile.open(saved) as src, tarfile.open(carried, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json" and data is not None:
                manifest = json.loads(data.read())
                for entry in manifest:
                    entry["RepoTags"] = [tag]
                body = json.dumps(manifest).encode()
                member.size = len(body)
                dst.addfile(member, io.BytesIO(body))
            elif member.name == "repositories":
                continue  # the old format's tag list: manifest.json's RepoTags is enough
            else:
                dst.addfile(member, data)
    saved.unlink()
    with carried.open("rb") as f:
        loaded = docker.images.load(f.read())
    assert any(tag in img.tags for img in loaded), [img.tags for img in loaded]
    return carried


def test_the_air_gapped_path_end_to_end(
    docker: Any, single_file: Path, wheelhouse: Path, tmp_path: Path, home: Path, unpacked: Path
) -> None:
    tag = f"launchctl-test/carried-{secrets.token_hex(4)}:bookworm"
    carry_image(docker, PYTHON_IMAGE, tag, tmp_path)
    code = tmp_path / "job"
    code.mkdir()
    (code / "requirements.txt").write_text("platformdirs\n")  # only in the wheel folder
    make_script(
        code,
        "train.py",
        "import platformdirs\nprint('from the wheel folder:', platformdirs.__version__)\n",
    )
    env = {"XDG_CACHE_HOME": str(unpacked), "LAUNCHCTL_HOME": str(home)}
    try:
        with serve(wheelhouse) as url:
            config = {
                # The folder is both the index and the links: pip asks nothing else.
                "builder": {
                    "base_image": tag,
                    "index_url": url,
                    "find_links": [url],
                    "network": "host",
                },
                "resource_args": {"local-container": {"network": "none"}},
            }
            steps = [
                ["queue", "create", "lab", "-r", "local-container", "--config", json.dumps(config)],
                ["launch", "-q", "lab", "-u", str(code), "-E", "python train.py"],
                ["agent", "-q", "lab", "--burst"],
            ]
            outs = []
            for step in steps:
                proc = run_file(single_file, *step, env=env)
                assert proc.returncode == 0, (step, proc.stderr)
                outs.append(proc.stdout.strip())
        run = cli_json("runs", "show", outs[1])
        assert run["state"] == "finished", run
        log = Path(run["log_path"]).read_text()
        assert "from the wheel folder: " in log, log
        assert any("built (generated from template" in (e["message"] or "") for e in run["events"])
        build_log = Path(run["log_path"]).with_name("build.log").read_text()
        assert f"FROM {tag}" in build_log or tag in build_log
        assert "pypi.org" not in build_log and "Successfully installed platformdirs" in build_log
        docker.images.remove(run["image"], force=True)
    finally:
        with contextlib.suppress(Exception):
            docker.images.remove(tag)


# -- Debian 12's python3 (3.11.2) has no tarfile filters: launchctl applies the same rules --


def hostile_members() -> list[tarfile.TarInfo]:
    def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> Any:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.uid, info.uname = kind, mode, link, 7, "them"
        return info

    return [
        member("ok.txt"),
        member("run.sh", mode=0o777),
        member("setuid", mode=0o4755),
        member("nox", mode=0o666),
        member("/etc/cron.d/x"),
        member("../outside"),
        member("a/../../outside"),
        member("dir", tarfile.DIRTYPE, 0o777),
        member("fifo", tarfile.FIFOTYPE),
        member("dev", tarfile.CHRTYPE),
        member("abs-link", tarfile.SYMTYPE, link="/etc/passwd"),
        member("out-link", tarfile.SYMTYPE, link="../../x"),
        member("in-link", tarfile.SYMTYPE, link="dir/ok.txt"),
        member("hard", tarfile.LNKTYPE, link="../x"),
    ]


def test_the_fallback_filter_decides_as_tarfiles_data_filter(tmp_path: Path) -> None:
    from launchctl import tarcompat

    def outcome(fn: Any, info: tarfile.TarInfo) -> Any:
        try:
            kept = fn(info, str(tmp_path))
        except tarfile.FilterError as exc:
            return ("refused", str(exc))
        return (kept.name, kept.mode, kept.uid, kept.gid, kept.uname, kept.linkname)

    for info in hostile_members():
        ours = outcome(tarcompat._data_filter, info)
        assert ours == outcome(tarfile.data_filter, info), info.name


def test_a_snapshot_unpacks_the_same_without_tarfile_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchctl import jobfiles, tarcompat

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in hostile_members():
            data = b"x" if info.isreg() else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    def tree(root: Path) -> list[tuple[str, int, bool]]:
        return sorted(
            (p.relative_to(root).as_posix(), p.lstat().st_mode, p.is_symlink())
            for p in root.rglob("*")
        )

    native_skips = jobfiles.extract(buf.getvalue(), tmp_path / "native")
    monkeypatch.setattr(tarcompat, "NATIVE", False)
    fallback_skips = jobfiles.extract(buf.getvalue(), tmp_path / "fallback")
    assert fallback_skips == native_skips
    assert tree(tmp_path / "fallback") == tree(tmp_path / "native")
    assert {p for p, _, _ in tree(tmp_path / "native")} == {
        "ok.txt",
        "run.sh",
        "setuid",
        "nox",
        "dir",
        "in-link",
        "etc",  # /etc/cron.d/x lands inside, as etc/cron.d/x
        "etc/cron.d",
        "etc/cron.d/x",
    }
    assert not (tmp_path / "outside").exists()
