"""Build what an air-gapped lab carries in (issue 17): ``nox -s dist`` runs this.

    python scripts/dist.py [--out dist] [--no-wheelhouse]

writes

    dist/launchctl     one executable file: a zipapp that needs only the machine's python3
                       (3.11 or newer); dist/lctl is the same file under the short name
    dist/wheelhouse/   every wheel launchctl needs, its optional extras' too, and its own:
                       pip install --no-index --find-links dist/wheelhouse 'launchctl[sweeps]'

Why a zipapp of our own making, not shiv, pex or a frozen binary: the numbers are in the
notes of issue 17. In short, a PyInstaller onefile unpacks itself on every start (5x the
pip install's start-up), and shiv's bootstrap adds its extract folder with
``site.addsitedir`` without checking who owns it, so a planted ``.pth`` there runs code.

The file holds two members: ``__main__.py`` (the bootstrap below) and ``payload.zip`` (the
installed packages). On its first start the bootstrap extracts the payload into a folder of
the user's own, ``$XDG_CACHE_HOME/launchctl/dist/BUILD-cpython-3XY`` (``~/.cache/...``), 0700,
checked on every start: it and ``dist/`` must belong to the user and be closed to others,
and every folder above must belong to the user or root and be writable by no one else
(unless sticky, as /tmp). Later starts only check and import: no unpacking.

The test suite (tests/test_dist.py) and the start-up benchmark call ``build_zipapp`` and
``build_wheelhouse`` here, so what they test is what nox builds. Everything is cached under
``.cache/dist/`` (ignored by git): the dependencies' wheels by the hash of pyproject.toml's
requirements and the Python version, the file itself by the hash of the sources.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import hashlib
import os
import platform
import py_compile
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipapp
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "dist"
# Extras that go into the wheelhouse: every optional one a user installs (not test/dev).
USER_EXTRAS_SKIP = {"test", "dev"}
NAMES = ("launchctl", "lctl")  # the file, and the short alias of [project.scripts]

# The bootstrap: must parse on an old python3 too, to say in one line that it is too old.
BOOTSTRAP = r'''# launchctl as one file (issue 17): see scripts/dist.py in its repository.
import os
import sys

BUILD = "@BUILD@"
PYC_TAG = "@PYC_TAG@"  # the Python whose .pyc files the payload carries


def _fail(message):
    sys.stderr.write("launchctl: error: " + message + "\n")
    sys.exit(1)


if sys.version_info < (3, 11):
    _fail("this file needs python3 3.11 or newer; this is %d.%d (%s)"
          % (sys.version_info[0], sys.version_info[1], sys.executable))


def _root():
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            _fail("no home folder to unpack into: set XDG_CACHE_HOME to a folder of yours")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "launchctl", "dist")


def _mkdir_private(path):
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def _check(path, private):
    """A folder nobody else can plant code in: never a link; private: ours and closed to
    others; above it: ours or root's, and writable by no one else (unless sticky, as /tmp)."""
    import stat

    st = os.lstat(path)
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if private:
        if st.st_uid != uid:
            return "belongs to another user (uid %d)" % st.st_uid
        if st.st_mode & 0o077:
            return "is open to other users (mode %o, want 700)" % (st.st_mode & 0o777)
        return None
    if st.st_uid not in (uid, 0):
        return "belongs to another user (uid %d)" % st.st_uid
    if st.st_mode & 0o022 and not st.st_mode & 0o1000:
        return "is writable by other users (mode %o)" % (st.st_mode & 0o777)
    return None


def _up(path):
    """path and every folder above it, up to /."""
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _checked(root):
    """root/BUILD, after checking root and every folder above it; unpacked when missing."""
    root = os.path.abspath(root)
    parent = os.path.dirname(root)
    try:
        os.makedirs(os.path.dirname(parent), exist_ok=True)
        _mkdir_private(parent)
        _mkdir_private(root)
    except OSError as exc:
        _fail("cannot make %s: %s (set XDG_CACHE_HOME to a folder of yours)" % (root, exc.strerror))
    # Both the path as written and as resolved: a link's own folder is checked, and so
    # is where it leads.
    for start in (parent, os.path.realpath(parent)):
        for here in _up(start):
            if os.path.islink(here):
                continue
            why = _check(here, private=False)
            if why:
                _fail("will not unpack under %s: %s %s" % (root, here, why))
    why = _check(root, private=True)
    if why:
        _fail("will not unpack into %s: it %s" % (root, why))
    # One folder per build and Python version: each holds .pyc files for its Python only.
    target = os.path.join(root, BUILD + "-" + str(sys.implementation.cache_tag))
    if not os.path.lexists(target):
        _unpack(root, target)
    why = _check(target, private=True)
    if why:
        _fail("will not run from %s: it %s" % (target, why))
    return target


def _unpack(root, target):
    import tempfile
    import zipfile

    archive = os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix=".unpack-", dir=root)
    try:
        with zipfile.ZipFile(archive) as outer, outer.open("payload.zip") as inner:
            with zipfile.ZipFile(inner) as payload:
                payload.extractall(work)
        if sys.implementation.cache_tag != PYC_TAG:
            # The .pyc files inside are another Python's: compiled once here, whatever
            # PYTHONDONTWRITEBYTECODE says (without them every start costs +80 ms).
            import compileall

            compileall.compile_dir(work, quiet=2)
        try:
            os.rename(work, target)  # atomic: a second start never sees half a folder
            work = None
        except OSError:
            if not os.path.isdir(target):
                raise
    finally:
        if work is not None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


target = _checked(_root())
# Our packages first, then the standard library; never the archive itself, and no .pth
# processing of the unpacked folder (site.addsitedir would run what a .pth says).
sys.path[0] = target
from launchctl.cli import main  # noqa: E402

sys.exit(main())
'''


@dataclass
class Built:
    files: list[Path]  # dist/launchctl (and dist/lctl)
    wheelhouse: Path | None


def _run(*args: str | Path, cwd: Path = ROOT) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, check=True)


def _pip(*args: str | Path) -> None:
    _run(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def source_files(root: Path = ROOT) -> list[Path]:
    """What the launchctl wheel is made of (and this script, which makes the file)."""
    found = [root / "pyproject.toml", root / "README.md", Path(__file__).resolve()]
    for folder in ("launchctl", "templates"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.append(path)
    return found


def source_hash(root: Path = ROOT) -> str:
    files = source_files(root)
    return _digest(*(str(p.relative_to(root)).encode() + p.read_bytes() for p in files))


def requirements(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(launchctl's dependencies, its user extras' dependencies) from pyproject.toml."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    extra = [r for name, reqs in extras.items() if name not in USER_EXTRAS_SKIP for r in reqs]
    return list(project["dependencies"]), sorted(set(extra))


def python_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"


def own_wheel(root: Path = ROOT, cache: Path = CACHE) -> Path:
    """launchctl's own wheel, built once per source hash."""
    folder = cache / f"self-{source_hash(root)}"
    found = sorted(folder.glob("launchctl-*.whl"))
    if found:
        return found[0]
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-self-", dir=_mkdir(cache)))
    _pip("wheel", "--no-deps", "-w", tmp, root)
    _replace(tmp, folder)
    _prune(cache, "self-")
    return sorted(folder.glob("launchctl-*.whl"))[0]


def dependency_wheels(root: Path = ROOT, cache: Path = CACHE, *, extras: bool = True) -> Path:
    """Every dependency's wheel (the extras' too), for this Python; needs a package index
    the first time, then cached by the requirements' hash."""
    core, extra = requirements(root)
    reqs = core + (extra if extras else [])
    key = _digest("\n".join(reqs).encode(), python_tag().encode())
    folder = cache / f"wheels-{python_tag()}-{key}"
    if (folder / ".complete").exists():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-wheels-", dir=_mkdir(cache)))
    _pip("wheel", "-w", tmp, *reqs)
    (tmp / ".complete").write_text("\n".join(reqs) + "\n")
    _replace(tmp, folder)
    return folder


def describe(root: Path = ROOT) -> str:
    """How this file was built, for ``launchctl --version``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "launchctl", "templates", "pyproject.toml"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        sha, dirty = "", ""
    origin = f"{sha}+changes" if sha and dirty else sha or "an unknown commit"
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    return f"zipapp built {day} from {origin}"


def build_zipapp(root: Path = ROOT, cache: Path = CACHE) -> Path:
    """The one file (cached by source hash): launchctl and its dependencies, no extras."""
    key = source_hash(root)
    done = cache / f"zipapp-{python_tag()}-{key}" / "launchctl"
    if done.exists():
        return done
    wheel = own_wheel(root, cache)
    deps = dependency_wheels(root, cache)
    stage = Path(tempfile.mkdtemp(prefix=".tmp-zipapp-", dir=_mkdir(cache)))
    try:
        lib = stage / "lib"
        _pip(
            "install", "--no-index", "--no-compile", "--target", lib,
            "--find-links", deps, "--find-links", wheel.parent, "launchctl",
        )  # fmt: skip
        shutil.rmtree(lib / "bin", ignore_errors=True)  # console scripts of this machine's python
        (lib / "launchctl" / "_build.py").write_text(
            '"""Written by scripts/dist.py: how this launchctl was built."""\n\n'
            f"DESCRIPTION = {describe(root)!r}\n"
        )
        # .pyc files for this Python, checked by nothing (the unpacked folder never
        # changes): a start on the same Python version unpacks them and compiles nothing.
        compileall.compile_dir(
            lib, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
        app = stage / "app"
        app.mkdir()
        payload = app / "payload.zip"
        with zipfile.ZipFile(payload, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(lib.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(lib))
        build = _digest(payload.read_bytes())
        bootstrap = BOOTSTRAP.replace("@BUILD@", build)
        (app / "__main__.py").write_text(
            bootstrap.replace("@PYC_TAG@", sys.implementation.cache_tag)
        )
        out = stage / "out"
        out.mkdir()
        zipapp.create_archive(app, out / "launchctl", interpreter="/usr/bin/env python3")
        _replace(out, done.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _prune(cache, "zipapp-")
    return done


def build_wheelhouse(root: Path = ROOT, cache: Path = CACHE) -> Path:
    """A folder holding launchctl's wheel and every wheel it and its extras need."""
    key = source_hash(root)
    done = cache / f"wheelhouse-{python_tag()}-{key}"
    if done.exists():
        return done
    wheel = own_wheel(root, cache)
    deps = dependency_wheels(root, cache)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-wheelhouse-", dir=_mkdir(cache)))
    for path in [wheel, *sorted(deps.glob("*.whl"))]:
        try:
            os.link(path, tmp / path.name)  # the same bytes: no second copy on disk
        except OSError:
            shutil.copy2(path, tmp / path.name)
    _replace(tmp, done)
    _prune(cache, "wheelhouse-")
    return done


def build(out: Path, *, wheelhouse: bool = True, root: Path = ROOT) -> Built:
    """What ``nox -s dist`` makes: out/launchctl, out/lctl and out/wheelhouse/."""
    out.mkdir(parents=True, exist_ok=True)
    made = build_zipapp(root)
    files = []
    for name in NAMES:
        target = out / name
        shutil.copyfile(made, target)
        target.chmod(0o755)
        files.append(target)
    house = None
    if wheelhouse:
        source = build_wheelhouse(root)
        house = out / "wheelhouse"
        shutil.rmtree(house, ignore_errors=True)
        shutil.copytree(source, house)
    return Built(files, house)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prune(cache: Path, prefix: str, keep: int = 3) -> None:
    """Builds of older sources go, but the newest few (another checkout may use them)."""
    found = sorted(cache.glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _replace(tmp: Path, folder: Path) -> None:
    """tmp becomes folder, atomically; a folder a concurrent build finished first stays."""
    try:
        tmp.rename(folder)
    except OSError:
        if not folder.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder to write")
    parser.add_argument(
        "--no-wheelhouse", action="store_true", help="only the file, not the wheelhouse"
    )
    args = parser.parse_args(argv)
    built = build(args.out, wheelhouse=not args.no_wheelhouse)
    for path in built.files:
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    if built.wheelhouse is not None:
        count = len(list(built.wheelhouse.glob("*.whl")))
        print(f"{built.wheelhouse}/  ({count} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
