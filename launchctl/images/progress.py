"""Read BuildKit's plain progress output: the build's steps as they go, and why it failed.

BuildKit (``--progress plain``) prints each vertex as ``#N [stage n/m] INSTRUCTION``, its
output as ``#N 1.234 text`` and its end as ``#N DONE 1.2s``, ``#N CACHED`` or
``#N ERROR: ...``. ``StepReader`` turns that into a few lines a person reads ("build step
5/7: RUN pip install ...", "build step 5/7 done in 8.2s"), and, when the build fails, one
line that says which step failed and why: pip's own error lines for a failed ``pip install``
with a hint when pip could not reach its index, and the way out when the machine cannot
reach a registry for a ``FROM`` (it is offline: build from a local base image).
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A numbered step: "#8 [stage-0 5/7] RUN ..." (docker 20.10) or "#8 [5/7] RUN ..." (buildx).
_STEP = re.compile(r"^#(\d+) \[(?:(\S+) )?(\d+)/(\d+)\] (.*)$")
_VERTEX = re.compile(r"^#(\d+) \[([^\]]*)\] (.*)$")  # any vertex, [internal] ones too
_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
_CACHED = re.compile(r"^#(\d+) CACHED$")
_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
# An error our Dockerfile template explains (a RUN step's output).
_OURS = re.compile(r"^launchctl error: (.*)$")
_MOUNT = re.compile(r"--mount=\S+\s*")
# A connection that could not be made: DNS, routing, TLS, a proxy, a timeout.
_NO_NETWORK = re.compile(
    r"no such host|server misbehaving|Temporary failure in name resolution|"
    r"Name or service not known|network is unreachable|Network is unreachable|"
    r"i/o timeout|TLS handshake timeout|dial tcp|connection refused|Connection refused|"
    r"NewConnectionError|Failed to establish a new connection|Max retries exceeded|"
    r"SSLError|CERTIFICATE_VERIFY_FAILED|ProxyError|ConnectTimeout|ReadTimeout|"
    r"Could not fetch URL|connection reset",
)
# A failure that is about getting an image from a registry (a FROM, a pull).
_REGISTRY = re.compile(
    r"failed to do request|failed to resolve source metadata|failed to load cache key|"
    r"failed to authorize|pull access denied|load metadata for|failed to fetch|"
    r"failed to copy|registry|/v2/"
)
_HOST = re.compile(r"https?://([^/\"'\s]+)")
SAY_EVERY_S = 30.0  # a long step says it is still running this often
DETAIL_LINES = 4  # of a failed step's output, in the failure's one line


def step_name(text: str, width: int = 90) -> str:
    """An instruction as a person reads it: BuildKit's ``--mount=...`` options left out,
    runs of spaces folded, cut at ``width``."""
    name = " ".join(_MOUNT.sub("", text).split())
    return name if len(name) <= width else name[: width - 3] + "..."


def seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes}m{secs:02d}s"


@dataclass
class Vertex:
    id: str
    name: str  # the instruction, e.g. "RUN pip install -r /launchctl/requirements.txt"
    number: int | None = None  # n of "n/m", None for [internal] vertices
    total: int | None = None
    stage: str | None = None
    started: float = 0.0
    said_at: float = 0.0
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    error: str | None = None
    ended: bool = False

    def label(self) -> str:
        where = f" ({self.stage})" if self.stage and not self.stage.startswith("stage-") else ""
        return f"build step {self.number}/{self.total}{where}"


class StepReader:
    """Feed it BuildKit's plain output; it calls ``say`` with one line per step event."""

    def __init__(self, say: Callable[[str], object] | None = None) -> None:
        self.say = say or (lambda line: None)
        self.vertices: dict[str, Vertex] = {}
        self.order: list[str] = []
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=40)  # every line, last
        self.ours: list[str] = []  # "launchctl error: ..." lines a RUN step printed
        self.steps_done = 0
        self.steps_cached = 0
        self._partial = b""

    # -- reading --------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        *done, self._partial = (self._partial + chunk).split(b"\n")
        for raw in done:
            self._line(raw.rstrip(b"\r").decode(errors="replace"))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial.rstrip(b"\r").decode(errors="replace"))
            self._partial = b""

    def _line(self, line: str) -> None:
        if line.strip():
            self.tail.append(line)
        now = time.monotonic()
        if m := _STEP.match(line):
            vid, stage, number, total, text = m.groups()
            if vid not in self.vertices:
                self._add(Vertex(vid, step_name(text), int(number), int(total), stage, now, now))
                self._say(f"{self.vertices[vid].label()}: {self.vertices[vid].name}")
            return
        if m := _VERTEX.match(line):
            vid, what, text = m.groups()
            if vid not in self.vertices:
                self._add(Vertex(vid, step_name(f"[{what}] {text}"), started=now, said_at=now))
            return
        if m := _OUTPUT.match(line):
            vertex = self.vertices.get(m.group(1))
            if vertex is not None:
                vertex.output.append(m.group(2))
                if ours := _OURS.match(m.group(2).strip()):
                    self.ours.append(ours.group(1))
                if vertex.number is not None and now - vertex.said_at >= SAY_EVERY_S:
                    vertex.said_at = now
                    self._say(f"{vertex.label()} still running ({seconds(now - vertex.started)})")
            return
        if m := _DONE.match(line):
            vertex = self.vertices.get(m.group(1))
            if vertex is not None:
                vertex.ended = True
            if vertex is not None and vertex.number is not None:
                self.steps_done += 1
                self._say(f"{vertex.label()} done in {seconds(float(m.group(2)))}")
            return
        if m := _CACHED.match(line):
            vertex = self.vertices.get(m.group(1))
            if vertex is not None:
                vertex.ended = True
            if vertex is not None and vertex.number is not None:
                self.steps_cached += 1
                self._say(f"{vertex.label()} cached")
            return
        if m := _ERROR.match(line):
            vertex = self.vertices.get(m.group(1))
            if vertex is not None:
                vertex.error = m.group(2)
                vertex.ended = True

    def _add(self, vertex: Vertex) -> None:
        self.vertices[vertex.id] = vertex
        self.order.append(vertex.id)

    def _say(self, text: str) -> None:
        self.say(f"launchctl: {text} [{seconds(time.monotonic() - self.started)}]")

    def tick(self) -> None:
        """Called while the build is quiet: a long step without output says it still runs."""
        now = time.monotonic()
        for vid in self.order:
            vertex = self.vertices[vid]
            if vertex.number is None or vertex.ended:
                continue
            if now - vertex.said_at >= SAY_EVERY_S:
                vertex.said_at = now
                self._say(f"{vertex.label()} still running ({seconds(now - vertex.started)})")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- failure --------------------------------------------------------------------------
    def failed(self) -> Vertex | None:
        """The vertex that failed: the last with an ERROR line."""
        for vid in reversed(self.order):
            if self.vertices[vid].error is not None:
                return self.vertices[vid]
        return None

    def last_line(self) -> str:
        return self.tail[-1].strip() if self.tail else "no output"

    def failure(self, base_images: list[str] | None = None) -> Failure:
        """Why the build failed, in a form for one line, and the lines that show it."""
        vertex = self.failed()
        error = (vertex.error if vertex else None) or self.last_line()
        error = error.removeprefix("ERROR: ")
        output = list(vertex.output) if vertex else []
        where = ""
        if vertex is not None and vertex.number is not None:
            where = f" at {vertex.label()} ({vertex.name})"
        if self.ours:
            return Failure(self.ours[-1], "", where, "\n".join(output[-DETAIL_LINES:]))
        everything = f"{error} {vertex.name if vertex else ''}"
        if _NO_NETWORK.search(error) and _REGISTRY.search(everything):
            host = _HOST.search(error)
            return Failure(
                _short_error(error),
                offline_hint(host.group(1) if host else None, base_images or []),
                where,
                error,
                offline=True,
            )
        pip = [line for line in output if _pip_error(line)]
        if pip or (vertex is not None and "pip install" in vertex.name):
            lines = pip[-3:] or _last_lines(output)
            detail = _exit(error)
            said = f"{detail}; pip said: " + " | ".join(lines) if lines else detail
            hint = ""
            if any(_NO_NETWORK.search(line) for line in output):
                hint = index_hint(output)
            return Failure(said, hint, where, "\n".join(lines))
        lines = _last_lines(output)
        detail = _exit(error)
        said = f"{detail}; its last output: " + " | ".join(lines) if lines else detail
        return Failure(said, "", where, "\n".join(lines))


@dataclass
class Failure:
    """Why a build failed: ``error`` (one line), a ``hint`` (a way out, or ""), ``where``
    (" at build step n/m (...)" or ""), and ``lines``: the build log lines that show it."""

    error: str
    hint: str
    where: str
    lines: str
    offline: bool = False


def _pip_error(line: str) -> bool:
    text = line.strip()
    return text.startswith(("ERROR:", "error:")) and "Retrying" not in text


def _last_lines(output: list[str]) -> list[str]:
    lines = [line.strip() for line in output if line.strip()]
    return lines[-DETAIL_LINES:]


def _exit(error: str) -> str:
    """BuildKit's words for a failed RUN, shortened to the exit code when that is all."""
    if m := re.search(r"exit code: (\d+)", error):
        return f"exit code: {m.group(1)}"
    return error


def _short_error(error: str) -> str:
    """A network error as its last cause ("dial tcp: lookup X: no such host")."""
    for marker in ("dial tcp", "lookup ", 'Get "', 'Head "'):
        at = error.find(marker)
        if at >= 0:
            return error[at:]
    return error


def offline_hint(host: str | None, base_images: list[str]) -> str:
    where = f"the registry {host}" if host else "the image's registry"
    which = f" ({', '.join(base_images)})" if base_images else ""
    return (
        f"this machine cannot reach {where} (offline?) to get the base image{which}: build"
        " from an image this engine already has: set builder.base_image in the queue's config"
        " (or -B/--base-image, or FROM in your Dockerfile) to a local image (`docker images`"
        " lists them; `scripts/services.sh images` makes launchctl-test/python:bookworm)"
    )


def unreachable_registry(error: str) -> tuple[str | None, str] | None:
    """For an engine's pull error: (the registry host or None, the error's last cause) when
    it failed for lack of network (DNS, routing, a refused connection, a timeout); None for
    any other failure (a missing image, denied access)."""
    if not _NO_NETWORK.search(error):
        return None
    host = _HOST.search(error)
    return (host.group(1) if host else None), _short_error(error)


def index_hint(output: list[str]) -> str:
    hosts = list(dict.fromkeys(m.group(1) for line in output for m in _HOST.finditer(line)))
    where = f" ({', '.join(hosts[:2])})" if hosts else ""
    return (
        f"pip could not reach its package index{where}: on an offline machine point builds at"
        " a local index with builder.index_url (a simple index URL) or builder.find_links (a"
        " folder or page of wheels) in the queue's config"
    )
