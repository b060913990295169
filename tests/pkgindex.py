"""A local package index on loopback, holding a wheel the tests make: the air-gapped lab's
situation, since containers here cannot reach a public index either."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "lcdemo"
PACKAGE_VALUE = "imported from the local index"


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel, written by hand: no build backend, no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_text.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: launchctl-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    record += f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Index:
    url: str  # http://127.0.0.1:PORT

    @property
    def simple(self) -> str:
        return f"{self.url}/simple/"

    @property
    def files(self) -> str:
        return f"{self.url}/files/"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """A PEP 503 simple index holding one wheel the test made, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("index")
    (root / "files").mkdir()
    wheel = make_wheel(root / "files", PACKAGE, "1.0", f"VALUE = {PACKAGE_VALUE!r}\n")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / PACKAGE).mkdir(parents=True)
    (root / "simple" / "index.html").write_text(f'<a href="{PACKAGE}/">{PACKAGE}</a>\n')
    (root / "simple" / PACKAGE / "index.html").write_text(
        f'<a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a>\n'
    )
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Index(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()
