"""Every ```bash block of README.md is run, so the README cannot drift from the product
(issue 12, item 15).

Each block runs as one bash script (``set -euo pipefail``) with cwd = the repo root, a
fresh ``LAUNCHCTL_HOME`` and ``HOME`` (the autouse ``home`` fixture), and ``launchctl``
and ``lctl`` on PATH running this interpreter's launchctl. Plain ``` and ```console
blocks are output or illustration and are not run. The rules a block is run by:

- ``RUN_ID`` stands for the newest run's id (the first row of ``runs list --json``),
  computed when its line runs.
- ``$KEY`` (a secret's value) is set to a dummy value; GPU discovery is off
  (``LAUNCHCTL_GPU_DISCOVERY=off``), so ``--gpus 0,1,2,3`` is taken as given.
- A block that uses ``local-container`` needs the Docker engine and the local base
  images (the ``docker`` fixture; skipped, saying why, without them); one that creates
  a ``-r slurm`` queue needs the one-node Slurm cluster (``scripts/services.sh slurm``).
- An HTML comment right before a block, ``<!-- readme-test: D1; D2 -->``, says how to
  run it. Directives:
  ``skip (reason)``: not run. ``lines N-M (reason)``: run only those lines of the block.
  ``copy``: run in a copy of the working tree (the block writes into its folder).
  ``background PREFIX``: the line ``launchctl PREFIX...`` runs in the background; it
  must still be alive when the block ends, and then exit 0 or 130 on Ctrl-C (SIGINT);
  the next line runs once it has printed its first line.
  ``refused PREFIX``: the line ``launchctl PREFIX...`` must be refused (exit 1, one
  line on stderr).
  ``wandb-server [ENTITY/PROJECT/QUEUE ...]``: a stand-in W&B server
  (tests/sync/standin, a stand-in: not W&B's own server) runs for the block, holding
  those run queues; ``http://wandb.lab:8080`` in the block is its address and
  ``WANDB_API_KEY`` its user's key.
- A ```console block right after a ```bash block (only prose between) goes on with it:
  its ``$ `` commands run in the same home, and are compared loosely with the output
  shown: a refusal shown (``launchctl: error: ...``) must be that exact line, exit 1;
  any other command must exit 0, and a table's header line shown must be printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ANNOTATION = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")
DIRECTIVE = re.compile(r"^(skip|lines|copy|background|refused|wandb-server)\b\s*(.*)$")


@dataclass
class Block:
    line: int  # the line of the opening fence
    body: list[str]
    directives: list[tuple[str, str]] = field(default_factory=list)
    # the ```console block right after it: (README line, `$ ` command, the output shown)
    console: list[tuple[int, str, list[str]]] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        return [arg for key, arg in self.directives if key == name]


def parse_directives(text: str, where: str) -> list[tuple[str, str]]:
    out = []
    for part in (p.strip() for p in text.split(";")):
        match = DIRECTIVE.match(part)
        if not match:
            raise ValueError(f"{where}: unknown readme-test directive {part!r}")
        out.append((match.group(1), match.group(2).strip()))
    return out


def readme_blocks(text: str) -> list[Block]:
    """The ```bash blocks of a Markdown text, with the directives of the comment before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    last_bash = -1  # the line of the last ```bash fence, while no other fence came after it
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            if fence == "```console" and blocks and blocks[-1].line == last_bash:
                blocks[-1].console = console_commands(lines, i + 1, end)
            if fence == "```bash":
                last_bash = i + 1
                block = Block(line=i + 1, body=lines[i + 1 : end])
                earlier = (lines[j].strip() for j in range(i - 1, -1, -1))
                before = next((s for s in earlier if s), "")
                match = ANNOTATION.match(before)
                if match:
                    block.directives = parse_directives(match.group(1), f"README.md:{i}")
                blocks.append(block)
            if fence != "```bash":
                last_bash = -1
            i = end + 1
            continue
        i += 1
    return blocks


def console_commands(lines: list[str], start: int, end: int) -> list[tuple[int, str, list[str]]]:
    commands: list[tuple[int, str, list[str]]] = []
    for n in range(start, end):
        if lines[n].startswith("$ "):
            commands.append((n + 1, lines[n][2:], []))
        elif commands:
            commands[-1][2].append(lines[n])
    return commands


def check_console(block: Block, out: Path) -> None:
    """Loosely: a command shown refused exits 1 with exactly the error line shown; any
    other exits 0, and a table's header line shown is the header printed."""
    for n, (line, command, shown) in enumerate(block.console):
        rc = int((out / f"console-{n}.rc").read_text())
        stdout = (out / f"console-{n}.out").read_text()
        stderr = (out / f"console-{n}.err").read_text()
        where = f"README.md:{line}: {command!r}"
        errors = [s for s in shown if s.startswith("launchctl: error:")]
        if errors:
            assert rc == 1, f"{where} exited {rc}, not 1\n{stdout}{stderr}"
            assert stderr.strip().splitlines() == errors, f"{where}: {stderr!r}"
            continue
        assert rc == 0, f"{where} exited {rc}\n{stdout}{stderr}"
        if shown and re.fullmatch(r"[A-Z_]+(\s+[A-Z_]+)+", shown[0]):
            printed = [" ".join(s.split()) for s in stdout.splitlines()]
            assert " ".join(shown[0].split()) in printed, f"{where}: no header {shown[0]!r}"


def strip_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).rstrip()


def matches(line: str, prefixes: list[str]) -> bool:
    words = line.strip().split()
    for prefix in (p.split("(")[0].split() for p in prefixes):
        if words[: 1 + len(prefix)] == ["launchctl", *prefix]:
            return True
    return False


# The W&B server the README's examples name; a ``wandb-server`` block gets a stand-in there.
README_WANDB_URL = "http://wandb.lab:8080"


def script_for(block: Block, out: Path, wandb_url: str = README_WANDB_URL) -> str:
    body = [raw.replace(README_WANDB_URL, wandb_url) for raw in block.body]
    for spec in block.get("lines"):
        first, _, last = spec.split()[0].partition("-")
        body = body[int(first) - 1 : int(last or first)]
    newest = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import json,sys; print(json.load(sys.stdin)[0]['id'])"
    )
    script = [
        "set -euo pipefail",
        "set -m  # background commands get Ctrl-C, as at a terminal",
        "__bg=()",
        f"__newest_run() {{ launchctl runs list --json | {newest}; }}",
        "__cleanup() {",
        '  __rc=$?; for p in ${__bg[@]+"${__bg[@]}"}; do kill -TERM $p 2>/dev/null || true; done',
        "}",
        "trap '__cleanup; exit $__rc' EXIT",
    ]
    for n, raw in enumerate(body):
        line = re.sub(r"\bRUN_ID\b", '"$(__newest_run)"', raw)
        if matches(raw, block.get("background")):
            log = out / f"bg-{n}.log"
            script += [
                f"{strip_comment(line)} >{log} 2>&1 & __bg+=($!)",
                f"for _ in $(seq 300); do [ -s {log} ] && break; sleep 0.1; done  # its first line",
            ]
        elif matches(raw, block.get("refused")):
            err = out / f"refused-{n}.err"
            script += [
                f"if {strip_comment(line)} 2>{err}; then",
                f"  echo 'readme-test: expected a refusal: {raw.strip()!r}' >&2; exit 96",
                "fi",
                f'[ "$(wc -l <{err})" = 1 ] || {{ cat {err} >&2; exit 95; }}',
            ]
        else:
            script.append(line)
    for n, (_, command, _) in enumerate(block.console):
        files = f">{out}/console-{n}.out 2>{out}/console-{n}.err"
        script.append(f"set +e; {command} {files}; echo $? >{out}/console-{n}.rc; set -e")
    logs = f"cat {out}/bg-*.log >&2"
    script += [
        "if [ ${#__bg[@]} -gt 0 ]; then sleep 0.5; fi  # a command that fails, fails by now",
        f"if grep -qs '^launchctl: error:' {out}/bg-*.log; then {logs}; exit 97; fi",
        'for p in ${__bg[@]+"${__bg[@]}"}; do',
        '  kill -0 "$p" || {',
        f'    echo "readme-test: a background command ended early" >&2; {logs}; exit 97',
        "  }",
        "done",
        'for p in ${__bg[@]+"${__bg[@]}"}; do kill -INT "$p"; done',
        'for p in ${__bg[@]+"${__bg[@]}"}; do',
        '  rc=0; wait "$p" || rc=$?',
        "  [ $rc = 0 ] || [ $rc = 130 ] || {",
        f'    echo "readme-test: a background command exited $rc on Ctrl-C" >&2; {logs}; exit 98',
        "  }",
        "done",
        "__bg=()",
    ]
    return "\n".join(script) + "\n"


def shim_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("launchctl", "lctl"):
        shim = path / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m launchctl "$@"\n')
        shim.chmod(0o755)
    return path


def copy_tree(dest: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, not ignored), without builds."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_has_bash_blocks_and_every_annotation_is_known() -> None:
    assert len(BLOCKS) >= 5
    for block in BLOCKS:
        for skip in block.get("skip"):
            assert skip.startswith("(") and len(skip) > 5, f"L{block.line}: a skip needs a reason"


def test_the_runner_fails_a_block_that_fails(tmp_path: Path) -> None:
    """The runner itself: a failing command, a background command that dies, a line
    that should be refused but is not: each fails the block."""
    cases = [
        Block(1, ["launchctl no-such-command"]),
        Block(1, ["launchctl status --no-such-flag"], [("background", "status")]),
        Block(1, ["launchctl status"], [("refused", "status")]),
    ]
    for n, block in enumerate(cases):
        out = tmp_path / f"case{n}"
        out.mkdir()
        proc = run_block(block, out, ROOT)
        assert proc.returncode != 0, (block, proc.stdout, proc.stderr)


def test_a_console_block_is_compared_with_the_output_shown(tmp_path: Path) -> None:
    """A refusal shown with other words than the product's fails the block."""
    command = "launchctl queue create q"
    shown = ["launchctl: error: words the product does not print"]
    block = Block(1, [command], console=[(3, command, shown)])
    proc = run_block(block, tmp_path, ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "console-0.rc").read_text().strip() == "1"  # it was refused
    with pytest.raises(AssertionError, match=r"README\.md:3"):
        check_console(block, tmp_path)


def run_block(
    block: Block, out: Path, cwd: Path, timeout: float = 120, wandb: Any = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if wandb is not None:
        env.update(wandb.env())
    env["PATH"] = f"{shim_dir(out / 'bin')}{os.pathsep}{env['PATH']}"
    env["KEY"] = "readme-test-secret"
    env["LAUNCHCTL_GPU_DISCOVERY"] = "off"
    env["PYTHONUNBUFFERED"] = "1"  # a background command's lines reach its log as at a terminal
    script = out / "block.sh"
    script.write_text(script_for(block, out, wandb.url if wandb is not None else README_WANDB_URL))
    return subprocess.run(
        ["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[f"L{b.line}" for b in BLOCKS])
def test_readme_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.get("skip"):
        pytest.skip(f"README.md:{block.line}: {block.get('skip')[0]}")
    text = "\n".join(block.body)
    if "local-container" in text:
        request.getfixturevalue("docker")
    if "-r slurm" in text:  # the one-node cluster scripts/services.sh slurm starts
        from tests.slurm.conftest import _cluster_problem

        problem = _cluster_problem()
        if problem is not None:
            pytest.skip(f"README.md:{block.line}: {problem}")
    cwd = ROOT
    if block.get("copy"):
        cwd = copy_tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    with contextlib.ExitStack() as stack:
        wandb = None
        if block.get("wandb-server"):
            from tests.sync.standin import WandbStandIn

            wandb = WandbStandIn().start()
            stack.callback(wandb.stop)
            for queue in block.get("wandb-server")[0].split():
                wandb.add_queue(*queue.split("/"))
        proc = run_block(block, out, cwd, wandb=wandb)
    assert proc.returncode == 0, (
        f"README.md:{block.line} failed (exit {proc.returncode})\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    check_console(block, out)
