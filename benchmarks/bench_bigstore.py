"""Issue 17, a big store: ``launchctl runs list`` against a store holding 100,000 runs
(20,000 with --quick), against the same command on a store of 50 runs. Target: under
150 ms.

The runs are the rows ``launch`` makes (``launchctl.launch.build_run`` of one spec, each
with its own id and name, and its ``launched`` event), written in one transaction rather
than 100,000 (the store's shape is the same; filling it is not what is measured), then
most moved to ``finished`` with an ``ended_at``, as a store that has served a lab for a
while holds them.
"""

from __future__ import annotations

import time
from typing import Any

from harness import (
    LAUNCHCTL,
    Settings,
    create_job,
    enqueue,
    fresh_home,
    make_code_dir,
    median,
    timed,
    use_home,
)
from report import Report, Row, met, secs

LIST_TARGET_S = 0.15


def fill(env: dict[str, str], count: int) -> float:
    """``count`` runs of the job ``trivial`` in the store, 99% of them finished; seconds."""
    from launchctl.launch import LaunchRequest, build_run, new_run_id, prepare_spec
    from launchctl.store import dumps
    from launchctl.store.runs import insert_event

    start = time.perf_counter()
    with use_home(env) as store:
        spec = prepare_spec(LaunchRequest(queue="default", job="trivial"))
        template = build_run(store, spec)
        now = time.time() - count  # one a second, up to now
        with store.db.write():
            for i in range(count):
                run_id = new_run_id()
                at = now + i
                row: dict[str, Any] = dict(
                    template, id=run_id, name=f"trivial-{run_id[:4]}", state="queued",
                    created_at=at, updated_at=at, enqueued_at=at, spec=dumps(template["spec"]),
                )  # fmt: skip
                cols = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                store.db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", list(row.values()))
                insert_event(store.db, run_id, None, "queued", None, "launched", at)
            store.db.execute(
                "UPDATE runs SET state = 'finished', exit_code = 0, started_at = created_at,"
                " ended_at = created_at + 1 WHERE seq % 100 != 0"
            )
    return time.perf_counter() - start


def bench_bigstore(settings: Settings, report: Report) -> None:
    """`runs list` on a big store against a small one, interleaved."""
    count = 200 * settings.throughput_runs  # 100,000; 20,000 with --quick
    reps = settings.startup_reps
    samples: dict[str, list[float]] = {"big": [], "small": []}
    with fresh_home("bigstore") as (tmp, env), fresh_home("bigstore-small") as (tmp2, env2):
        create_job(env, make_code_dir(tmp), "trivial", ["true"])
        fill_s = fill(env, count)
        create_job(env2, make_code_dir(tmp2), "trivial", ["true"])
        enqueue(env2, "trivial", 50)
        cmd = [LAUNCHCTL, "runs", "list"]
        for e in (env, env2):  # warm-up: page cache, .pyc files
            timed(cmd, e)
        for rep in range(reps):
            order = [("big", env), ("small", env2)]
            for name, e in order if rep % 2 == 0 else order[::-1]:
                samples[name].append(timed(cmd, e))
    big, small = median(samples["big"]), median(samples["small"])
    report.rows.append(
        Row(
            f"big store: `launchctl runs list` with {count} runs stored",
            secs(big),
            secs(small),
            "the same with 50 runs stored",
            f"{big - small:+.3f} s",
            f"< {LIST_TARGET_S} s",
            met(big < LIST_TARGET_S),
        )
    )
    report.raw["bigstore"] = {"runs": count, "fill_s": fill_s, "samples_s": samples}
    report.notes.append(
        f"big store: median of {reps} `runs list` calls on each store, interleaved, after one"
        f" warm-up each; the big store holds {count} runs of one job (99% finished, the rest"
        " queued), each with its `launched` event."
    )
