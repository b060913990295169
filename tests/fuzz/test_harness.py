"""The in-process runner (``harness.run_cli``) is trustworthy: it matches a real process."""

from __future__ import annotations

from tests.conftest import cli

from .harness import Seed, run_cli


def test_in_process_runner_matches_a_real_process(seed: Seed) -> None:
    inputs = [
        ["queue", "create", "q"],
        ["queue", "create", "bad name"],
        ["queue", "create", "z1", "--config", "{"],
        ["queue", "create", "z1", "--config", "missing.yaml"],
        ["queue", "create", "z1", "--config", "dir.json"],
        ["queue", "edit", "q", "--config", "builder: [1"],
        ["queue", "create", "\udcff"],
        ["runs", "list", "--limit", "abc"],
        ["runs", "list", "--bogus"],
        ["runs", "show", "nope"],
        ["launch", "--queue=q", "--job=nope"],
        ["launch", "--queue=q", "--job=hello", "--set-var", "n=9"],
        ["queue", "show", "box", "--json"],
        ["--version"],
    ]
    for args in inputs:
        fast = run_cli(*args)
        real = cli(*args)
        assert fast.escaped is None, str(fast)
        assert (fast.code, fast.out, fast.err) == (real.returncode, real.stdout, real.stderr), (
            f"in-process and real process differ for {args}:\n{fast}\nreal: {real!r}"
        )
    # A write, the same way in both.
    assert run_cli("queue", "create", "in1").out == "created queue in1 (local-process)\n"
    assert cli("queue", "create", "in2").stdout == "created queue in2 (local-process)\n"
