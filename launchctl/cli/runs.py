"""`launchctl runs ...` and `launchctl logs`: list, inspect, cancel, rerun and follow runs."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import ago, clean, duration, emit_json, err, line, table, when

app = typer.Typer(
    help="List, inspect, edit, cancel and rerun runs.\n\n\b\nExample:\n"
    "  launchctl runs list --state running",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def list_(
    queue: str | None = typer.Option(None, "--queue", "-q", help="Only this queue's runs."),
    state: list[str] = typer.Option(
        [], "--state", "-s", help="Only runs in this state (repeatable)."
    ),
    job: str | None = typer.Option(
        None, "--job", "-j", metavar="JOB", help="Only runs of this job (NAME, or NAME:vN)."
    ),
    project: str | None = typer.Option(
        None, "--project", "-p", metavar="PROJECT", help="Only runs of this project."
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="WHEN",
        help="Only runs created since then: an age (2h, 7d) or an ISO date (2026-11-20).",
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        "-c",
        metavar="KEYS",
        help="Run-config keys to show as columns, comma-separated (default: the keys"
        " whose values differ among the listed runs; 'none' for no such columns).",
    ),
    limit: int = typer.Option(
        50, "--limit", "-n", help="At most this many, newest first (0: all)."
    ),
    array: str | None = typer.Option(
        None,
        "--array",
        metavar="ARRAY",
        help="Only this array's runs (launch --array printed its id), by index.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List runs, newest first, with the run-config values that tell them apart.

    GPU, attempt and rerun-of columns appear when a listed run has one.

    \b
    Example:
      launchctl runs list -j hello --since 1d --columns lr,batch_size
    """
    from launchctl import runs

    runs.check_filters(state, limit)  # before the store is opened: a refusal creates nothing
    if since is not None:
        runs.parse_since(since)
    keys = runs.parse_columns(columns)
    if array is not None:
        _check_array_filters(array, queue=queue, job=job, project=project, since=since)
        from launchctl import arrays

        store = open_store()
        rows = arrays.listing(store, array, state, limit)
    else:
        store = open_store()
        rows = runs.listing(
            store, queue=queue, states=state, limit=limit, job=job, project=project,
            since=since,
        )  # fmt: skip
    from launchctl import workflow  # issue 18: held, not before, after

    workflow.annotate(store, rows)
    if as_json:
        emit_json([runs.for_json(r) for r in rows])
        return
    from launchctl.priority import PRIORITY_NAMES

    if keys is None:
        keys = runs.differing_keys(rows)
    extra: list[tuple[str, object]] = []
    if any(r.get("devices") for r in rows):
        extra.append(("gpus", lambda r: ",".join(map(str, r["devices"] or [])) or None))
    if any(r["attempts"] > 1 for r in rows):
        extra.append(("attempts", lambda r: r["attempts"]))
    if any(r["rerun_of"] for r in rows):
        extra.append(("rerun-of", lambda r: r["rerun_of"]))
    if any(r.get("array_id") for r in rows):  # issue 18: launch --array
        extra.append(("array", _array_cell))
    table(
        (
            [
                r["id"],
                r["name"],
                r["queue_name"] or "(direct)",
                workflow.state_cell(r),
                PRIORITY_NAMES.get(r["priority"], r["priority"]),
                *(runs.config_value(r, k) for k in keys),
                *(get(r) for _, get in extra),  # type: ignore[operator]
                r["exit_code"],
                duration(r["started_at"], r["ended_at"]),
                ago(r["created_at"]),
            ]
            for r in rows
        ),
        ["run", "name", "queue", "state", "priority", *keys, *(h for h, _ in extra),
         "exit", "runtime", "created"],
    )  # fmt: skip


def _check_array_filters(given: str, **others: str | None) -> None:
    """``runs list --array ID`` lists the array's runs by index (with --state and
    --limit); the other filters are refused with it, before the store is opened."""
    from launchctl import arrays
    from launchctl.errors import UsageError

    flags = {"queue": "--queue (-q)", "job": "--job (-j)", "project": "--project (-p)",
             "since": "--since"}  # fmt: skip
    for key, flag in flags.items():
        if others.get(key) is not None:
            raise UsageError(f"cannot use both --array and {flag}: an array is one launch")
    arrays.check_id(given)


def _array_cell(row: dict[str, Any]) -> str | None:
    """``a-3kx9q2ab[3]``: the run's array and its index there."""
    if not row.get("array_id"):
        return None
    return f"{row['array_id']}[{row['array_index']}]"


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a run: spec, every state change, exit code, failure stage and reason, log path.

    \b
    Example:
      launchctl runs show 3kx9q2ab
    """
    from launchctl import hooks, runs

    store = open_store()
    run = runs.details(store, run_id)
    run["hooks"] = hooks.deliveries(store, run["id"])  # issue 18: hooks owed when it ended
    from launchctl import workflow  # issue 18: held, not before, after

    workflow.annotate(store, [run])
    if as_json:
        emit_json(run)
        return
    events, tries = run["events"], run["attempts"]
    import json

    entry = (run["spec"].get("overrides") or {}).get("entry_point")
    line(f"run:        {run['id']} ({run['name']})")
    line(f"state:      {run['state']}", state=run["state"])
    for waits in workflow.waiting_for(run):  # issue 18
        line(f"waits for:  {waits}")
    if run.get("stalled_at") and run["state"] == "running":  # issue 18: launchctl.agent.stall
        line(f"stalled:    no output since {workflow.local_time(run['stalled_at'])}")
    if run["stage"] or run["reason"]:
        line(
            f"reason:     {run['reason'] or '-'}"
            + (f" (stage {run['stage']})" if run["stage"] else "")
        )
    line(f"exit code:  {run['exit_code'] if run['exit_code'] is not None else '-'}")
    line(f"queue:      {run['queue_name'] or '(direct launch)'}")
    line(f"job:        {run['spec'].get('job') or '-'}")
    if entry:
        line(f"entrypoint: {shlex.join(entry)}")
    line(f"project:    {run['project']}  entity: {run['entity']}")
    line(f"agent:      {run['agent_id'] or '-'}")
    if run.get("devices") is not None:
        line(f"gpus:       {','.join(str(i) for i in run['devices']) or 'none'}")
    line(f"runtime:    {duration(run['started_at'], run['ended_at'])}")
    if run["rerun_of"]:
        line(f"rerun of:   {run['rerun_of']}")
    if run.get("array_id"):  # issue 18: launch --array
        facts = run["spec"].get("array") or {}
        limit = f", at most {run['array_limit']} at once" if run.get("array_limit") else ""
        line(
            f"array:      {run['array_id']} index {run['array_index']}"
            f" (of {facts.get('count', '?')}{limit})"
        )
    if run.get("image"):  # the image that ran; its base is in the `starting` event (issue 20)
        line(f"image:      {run['image']}")
    line(f"log:        {run['log_path']}")
    for link in run.get("wandb_runs") or []:  # uploaded by `launchctl sync` with `wandb sync`
        line(f"wandb run:  {link['wandb_run_path']} on {link['base_url']}")
    if run["resume_count"] or run["retries"]:
        line(f"requeued:   {run['resume_count']} after preemption, {run['retries']} retries")
    if len(tries) > 1:
        line("attempts:")
        for t in tries:
            ended = t["outcome"] or "(in progress)"
            why = f"  {t['message']}" if t["message"] else ""
            line(f"  #{t['attempt']}  {when(t['claimed_at'])}  {ended:<10}{why}")
    _hook_lines(run["hooks"])
    line("events:")
    for ev in events:
        frm = ev["from_state"] or "-"
        msg = f"  {ev['message']}" if ev["message"] else ""
        if frm == ev["to_state"]:  # a note: a warning or a takeover, no state change
            line(f"  {when(ev['at'])}  {'note':>22}{msg}")
            continue
        line(f"  {when(ev['at'])}  {frm:>9} -> {ev['to_state']:<9}{msg}")
    line("spec:")
    print(json.dumps(run["spec"], indent=2, sort_keys=True))


def _hook_lines(owed: dict[str, Any]) -> None:
    """The hooks a run was owed when it ended, and how each went (issue 18)."""
    if not owed["deliveries"] and not owed["waiting"]:
        return
    line("hooks:")
    if owed["waiting"]:
        line("  (the run ended; an agent serving its queue works out its hooks)")
    for d in owed["deliveries"]:
        tries = f"{d['attempts']}/{d['max_attempts']} tries" if d["kind"] == "webhook" else ""
        why = f"  {d['last_error']}" if d["last_error"] and d["state"] != "delivered" else ""
        line(f"  {d['source']:<6} {d['hook']}  {d['state']} {tries}".rstrip() + why)


@app.command("cancel")
def cancel(
    run_id: str | None = typer.Argument(None, help="Run id."),
    array: str | None = typer.Option(
        None, "--array", metavar="ARRAY", help="Cancel every unfinished run of this array."
    ),
) -> None:
    """Cancel a run: a queued run stops at once, a running one is stopped by its agent.

    Only the run's author, or an admin of its entity (or of its queue's), may cancel it;
    `runs show` says who did. --array cancels every run of an array not yet ended, as
    scancel does an array job's.

    \b
    Example:
      launchctl runs cancel 3kx9q2ab
      launchctl runs cancel --array a-3kx9q2ab
    """
    from launchctl import runs
    from launchctl.errors import UsageError

    if array is not None:
        if run_id is not None:
            raise UsageError("pass a run id or --array, not both")
        _cancel_array(array)
        return
    if run_id is None:
        raise UsageError("pass a run id to cancel, or --array ARRAY")

    # Refused unless the user is its author, or an admin of its entity or its queue's.
    run, state = runs.cancel(open_store(), run_id)
    if state == "stopped":
        print(f"run {run['id']} stopped")
    else:
        print(f"run {run['id']} is {state}; its agent is stopping it")


def _cancel_array(given: str) -> None:
    """``runs cancel --array`` (issue 18): one line per run on stdout, one per refusal on
    stderr; exit 1 when any was refused."""
    from launchctl import arrays

    arrays.check_id(given)  # before the store is opened
    done = arrays.cancel(open_store(), given)
    for run, state in done.done:
        if state == "stopped":
            print(f"run {run['id']} stopped")
        else:
            print(f"run {run['id']} is {state}; its agent is stopping it")
    for _run, why in done.refused:
        err(clean(why))
    if not done.done and not done.refused:
        print(f"array {done.array_id} has no unfinished runs")
    if done.refused:
        raise typer.Exit(1)


from launchctl.cli import runs_hold  # noqa: E402  (issue 18: runs hold, runs release)

runs_hold.register(app)


@app.command("rerun")
def rerun(
    run_id: str | None = typer.Argument(
        None, help="Run id to copy (or --failed for every failed run)."
    ),
    set_: list[str] = typer.Option([], "--set", help="run_config override key=value (repeatable)."),
    priority: str | None = typer.Option(None, "--priority", "-P", help="New priority."),
    failed: bool = typer.Option(
        False,
        "--failed",
        help="Rerun every failed run that has no rerun yet (yours, or"
        " any of an entity you administer).",
    ),
    queue: str | None = typer.Option(
        None, "--queue", "-q", help="With --failed: only this queue's failed runs."
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="WHEN",
        help="With --failed: only runs created since then: an age (2h, 7d) or an ISO date.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="With --failed: say which runs would be rerun; queue nothing."
    ),
    array: str | None = typer.Option(
        None,
        "--array",
        metavar="ARRAY",
        help="Rerun this array's runs (with --failed: its failed ones) as a new array.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Queue a new run with the same spec, changing the --set overrides.

    --failed reruns every failed run (of -q, created since --since) in one step, each
    recorded as a rerun of its original, and prints the new ids; a run that already has
    a rerun is not rerun again.

    \b
    Example:
      launchctl runs rerun 3kx9q2ab --set lr=0.01
      launchctl runs rerun --failed -q gpu --since 2h
      launchctl runs rerun --array a-3kx9q2ab --failed
    """
    from launchctl.errors import UsageError

    if array is not None:
        for flag, given in (("a run id", run_id), ("--queue (-q)", queue), ("--since", since),
                            ("--dry-run", dry_run)):  # fmt: skip
            if given:
                raise UsageError(f"cannot use both --array and {flag}: pick one")
        _rerun_array(array, failed, set_, priority, as_json)
        return
    if failed:
        if run_id is not None:
            raise UsageError("pass a run id or --failed, not both")
        _rerun_failed(queue, since, set_, priority, dry_run, as_json)
        return
    if run_id is None:
        raise UsageError("pass a run id to rerun, or --failed to rerun every failed run")
    for flag, given in (("--queue (-q)", queue), ("--since", since), ("--dry-run", dry_run)):
        if given:
            raise UsageError(f"{flag} goes with --failed; a rerun of one run takes its queue")
    from launchctl.launch import rerun as do_rerun

    run = do_rerun(open_store(), run_id, sets=set_, priority=priority)
    if as_json:
        emit_json(run)
    else:
        print(run["id"])


def _rerun_array(
    given: str, failed: bool, sets: list[str], priority: str | None, as_json: bool
) -> None:
    """``runs rerun --array ID [--failed]`` (issue 18): the new array's id on stdout (as
    ``launch --array`` prints it); --json: its runs."""
    from launchctl import arrays
    from launchctl.launch import parse_priority, parse_set

    arrays.check_id(given)  # refused before the store is opened: a refusal creates nothing
    parse_set(sets)
    parse_priority(priority)
    new_id, new_runs = arrays.rerun(
        open_store(), given, failed=failed, sets=sets, priority=priority
    )
    if as_json:
        emit_json(new_runs)
        return
    print(new_id)
    err(f"queued array {new_id}: {len(new_runs)} rerun{'s' if len(new_runs) != 1 else ''}")


def _rerun_failed(
    queue: str | None,
    since: str | None,
    sets: list[str],
    priority: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """``runs rerun --failed`` (issue 18): new ids on stdout, one a line; what was left
    alone on stderr."""
    from launchctl.launch import parse_priority, parse_set, rerun_failed
    from launchctl.runs import parse_since

    parse_set(sets)  # refused before the store is opened: a refusal creates nothing
    parse_priority(priority)
    if since is not None:
        parse_since(since)
    done = rerun_failed(
        open_store(), queue=queue, since=since, sets=sets, priority=priority, dry_run=dry_run
    )
    if as_json:
        emit_json({
            "dry_run": dry_run,
            "rerun": [{"run": new["id"] if new else None, "rerun_of": old["id"]}
                      for old, new in done.reran],
            "skipped": [{"run": old["id"], "reason": why} for old, why in done.skipped],
            "not_yours": done.others,
        })  # fmt: skip
        return
    for old, why in done.skipped:
        err(clean(f"skipping run {old['id']}: {why}"))
    if done.others:
        err(
            f"left {done.others} failed run{'s' if done.others != 1 else ''} of other users"
            " alone: only a run's author or an admin of its entity reruns it in bulk"
        )
    if not done.reran:
        err("no failed runs to rerun")
        return
    for old, new in done.reran:
        if new is None:
            print(f"{old['id']} (would be rerun)")
        else:
            print(new["id"])


@app.command("edit")
def edit(
    run_id: str = typer.Argument(..., help="A queued run's id (a unique prefix is enough)."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="run_config override to change (repeatable)."
    ),
    set_var: list[str] = typer.Option(
        [],
        "--set-var",
        "-v",
        metavar="NAME=VALUE",
        help="Template variable value to change (repeatable).",
    ),
    priority: str | None = typer.Option(None, "--priority", "-P", help="New priority."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change a queued run's overrides, template values or priority before an agent takes it.

    Checked as a launch into its queue is; refused once an agent has claimed the run.
    Only its author or an admin of its entity may; `runs show` lists the change.

    \b
    Example:
      launchctl runs edit 3kx9q2ab --set lr=0.05 -P high
    """
    from launchctl.launch import edit as do_edit
    from launchctl.launch import parse_priority, parse_set, parse_set_vars

    parse_set(set_)  # refused before the store is opened: a refusal creates nothing
    parse_set_vars(set_var)
    parse_priority(priority)
    run, changed = do_edit(open_store(), run_id, sets=set_, set_vars=set_var, priority=priority)
    if as_json:
        emit_json({"run": run["id"], "changed": changed})
    elif changed:
        line(f"run {run['id']} edited: {', '.join(changed)}")
    else:
        print(f"run {run['id']} unchanged: it already has those values")


def confirm(question: str, yes: bool) -> bool:
    """``--yes`` or, on a terminal, the user's answer; a delete that nobody can answer
    for (stdin not a terminal, no ``--yes``) is refused with nothing removed."""
    if yes:
        return True
    if not sys.stdin.isatty():
        from launchctl.errors import UsageError

        raise UsageError(f"{question} (no terminal to ask on: pass --yes to go ahead)")
    return typer.confirm(question, default=False)


YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _report(store: Any, plan: Any, yes: bool, what: str) -> None:
    from launchctl import housekeeping as hk

    for run, why in plan.skipped:
        err(f"skipping run {run['id']}: {why}")
    if plan.waited:  # issue 18 (launchctl.housekeeping): how many, once, after the lines
        n = len(plan.waited)
        err(f"kept {n} run{'s' if n != 1 else ''} that runs not yet ended wait for (see above)")
    if not plan.runs:
        print(f"no runs to {what}")
        return
    n = len(plan.runs)
    question = f"delete {n} run{'s' if n != 1 else ''} and their logs ({hk.human_size(plan.size)})?"
    if not confirm(question, yes):
        err("nothing deleted")
        raise typer.Exit(1)
    deleted, freed, problems = hk.execute(store, plan)
    for problem in problems:
        err(f"could not remove {problem}")
    print(
        f"deleted {len(deleted)} run{'s' if len(deleted) != 1 else ''},"
        f" {hk.human_size(freed)} freed"
    )
    if len(deleted) < n:
        err(f"{n - len(deleted)} run(s) changed state meanwhile and were kept")


@app.command("delete")
def delete(
    run_ids: list[str] = typer.Argument(..., metavar="RUN...", help="Run ids (prefixes)."),
    yes: bool = YES_OPTION,
) -> None:
    """Delete ended runs with their logs and work folders, and say how much space came back.

    A queued or running run is refused (cancel it first); only a run's author or an
    admin of its entity may delete it. Asks first on a terminal.

    \b
    Example:
      launchctl runs delete 3kx9q2ab 7hd2k1pq --yes
    """
    from launchctl import housekeeping

    store = open_store()
    _report(store, housekeeping.plan_delete(store, run_ids), yes, "delete")


@app.command("prune")
def prune(
    older_than: str = typer.Option(
        "0s",
        "--older-than",
        metavar="AGE",
        help="Only runs that ended longer ago than this: 30d, 12h, 45m (default: any).",
    ),
    state: list[str] = typer.Option(
        [],
        "--state",
        "-s",
        metavar="STATES",
        help="Only runs in these ended states, comma-separated (default: finished,failed,stopped).",
    ),
    yes: bool = YES_OPTION,
) -> None:
    """Delete ended runs (with their logs and work folders) older than --older-than.

    Never touches a queued or running run; skips (and names) runs you may not delete.

    \b
    Example:
      launchctl runs prune --older-than 30d --state finished,failed
    """
    from launchctl import housekeeping, runs

    age = runs.parse_age(older_than)
    states = housekeeping.check_prune_states(state)
    store = open_store()
    _report(store, housekeeping.plan_prune(store, older_than_s=age, states=states), yes, "prune")


def logs(
    run_id: str = typer.Argument(..., help="Run id."),
    follow_: bool = typer.Option(
        False, "--follow", "-f", help="Keep following until the run ends."
    ),
) -> None:
    """Print a run's log; -f follows a live run until it ends and exits with its status
    (0 finished, the run's exit code when it failed, 130 stopped).

    \b
    Example:
      launchctl logs -f 3kx9q2ab
    """
    import signal

    from launchctl import runs
    from launchctl.follow import exit_status, follow
    from launchctl.states import State

    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    store = open_store()
    run = runs.get(store, run_id)
    if not follow_ and run["state"] == State.QUEUED:
        err(f"run {run['id']} has not started: {runs.waiting_reason(store, run)}")
        return

    def waiting(r: dict[str, object]) -> None:
        why = runs.waiting_reason(store, runs.get(store, run["id"]))
        err(f"run {run['id']} is queued and has not started: {why}")

    run = follow(store, run["id"], write, follow=follow_, on_wait=waiting, on_lost=err)
    if follow_:
        detail = f"exit code {run['exit_code']}" if run["exit_code"] is not None else ""
        if run["state"] in ("failed", "stopped") and run["reason"]:
            detail = run["reason"]
        err(f"run {run['id']} {run['state']}" + (f" ({detail})" if detail else ""))
        raise typer.Exit(exit_status(run))
