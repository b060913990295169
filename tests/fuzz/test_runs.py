"""Fuzz `runs list/show/cancel`, `job show`, `queue render` and `queue template unset`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from launchctl.states import State

from .harness import SETTINGS, Result, Seed, check, run_matched, strict_json
from .strategies import ARG_TEXT, ODD_STRINGS, SET_VAR, TEMPLATE_NAMES, argv_safe, run_id_arg


@SETTINGS
@given(data=st.data())
def test_run_commands_bad_input_gets_one_line_and_no_write(seed: Seed, data: st.DataObject) -> None:
    """`runs list --state --limit`, `runs show ID`, `runs cancel ID` and other lookups."""
    command = data.draw(st.sampled_from(["list", "show", "cancel", "job show", "render", "unset"]))
    if command == "list":
        argv = ["runs", "list"]
        for state in data.draw(
            st.lists(st.one_of(st.sampled_from([s.value for s in State]), ARG_TEXT), max_size=2)
        ):
            argv.append(f"--state={state}")
        limit = data.draw(
            st.one_of(
                st.none(),
                st.integers(-5, 5).map(str),
                st.sampled_from(["99999999999999999999", str(2**63), str(2**63 - 1), "1e3"]),
                ARG_TEXT,
            )
        )
        if limit is not None:
            argv.append(f"--limit={limit}")
        queue = data.draw(st.one_of(st.none(), st.sampled_from(["q", "box"]), ARG_TEXT))
        if queue is not None:
            argv.append(f"--queue={queue}")
        argv.append("--json")

        def listed(result: Result) -> None:
            rows = strict_json(result.out)
            assert isinstance(rows, list), str(result)
            if limit is not None and limit.strip().isdigit() and int(limit) > 0:
                assert len(rows) <= int(limit), str(result)

        check(seed.home, *argv, on_success=listed)
        return
    if command in ("show", "cancel"):
        given_id = data.draw(run_id_arg(seed))
        check(seed.home, "runs", command, "--", given_id, on_success=run_matched(seed, given_id))
        return
    if command == "job show":
        check(
            seed.home,
            "job",
            "show",
            "--",
            data.draw(st.one_of(st.sampled_from(ODD_STRINGS), ARG_TEXT)),
        )
        return
    if command == "render":
        argv = ["queue", "render"]
        argv += [f"--set-var={v}" for v in data.draw(st.lists(SET_VAR, max_size=3))]
        argv += ["--", data.draw(st.one_of(st.just("q"), ARG_TEXT))]
        check(seed.home, *argv, on_success=lambda r: strict_json(r.out) and None)
        return
    check(
        seed.home,
        "queue", "template", "unset", "--",
        data.draw(st.one_of(st.sampled_from(["q", "box"]), ARG_TEXT)),
        data.draw(st.one_of(TEMPLATE_NAMES.map(argv_safe), ARG_TEXT)),
    )  # fmt: skip
