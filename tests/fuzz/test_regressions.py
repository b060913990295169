"""The inputs the fuzz found (``regressions.FOUND``), and the YAML alias bomb."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import cli

from .harness import ERROR_PREFIX, Result, Seed, check, queue_holds, run_matched
from .regressions import FOUND


@pytest.mark.parametrize("argv", FOUND)
def test_inputs_the_fuzz_found_get_one_line_and_no_write(seed: Seed, argv: list[str]) -> None:
    fresh = seed.work / "fresh-code"
    fresh.mkdir()
    (fresh / "train.py").write_text("print('fresh')\n")
    values = {"{run}": seed.run_id, "{RUN}": seed.run_id[:3].upper(), "{code}": str(fresh)}
    args = [values.get(a, a) for a in argv]
    on_success: Callable[[Result], None] | None = None
    if args[:2] == ["queue", "create"] and "--config" in args:
        on_success = queue_holds(seed, args[2], args[args.index("--config") + 1])
    elif args[0] == "runs" and args[1] in ("show", "cancel"):
        on_success = run_matched(seed, args[-1])
    check(seed.home, *args, on_success=on_success)


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    """400 bytes of YAML anchors that expand to a million strings: refused, not stored.

    (When the fuzz found it, `queue create` took 38 s and 1 GB, and wrote a 69 MB config.)
    """
    lines = ["builder:", "  a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    try:
        proc = cli("queue", "create", "bomb", "--config", "\n".join(lines), timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("a 400-byte YAML alias bomb kept launchctl busy over 5 s") from None
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(ERROR_PREFIX) and proc.stderr.count("\n") == 1, proc.stderr
