"""Issue 9, finding 2: jobs belong to an entity.

Only members of a job's entity add versions to it; a job name is unique within an entity,
not across the store; every version records its author, `job show` lists them; and a run
uses a job version only if its author is a member of the run's entities, checked at launch
and again by the agent when it claims the run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from launchctl import jobs
from launchctl.store import Store
from tests.conftest import cli, make_script, table_counts, wait_for

ALICE = {"LAUNCHCTL_USER": "alice"}  # admin of team 'vision'
BOB = {"LAUNCHCTL_USER": "bob"}  # member of 'vision'
CAROL = {"LAUNCHCTL_USER": "carol"}  # member of 'vision', until alice removes her
MALLORY = {"LAUNCHCTL_USER": "mallory"}  # in no team but her own


def as_user(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(*args, "--json", env=env, check=True).stdout)


def refused(env: dict[str, str], *args: str, code: int = 1) -> str:
    proc = cli(*args, env=env)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def code_dir(folder: Path, marker: str) -> str:
    make_script(folder, "train.py", f"print({marker!r})\n")
    return str(folder)


@pytest.fixture
def vision(tmp_path: Path) -> str:
    """alice runs team 'vision' (members bob and carol), its queue 'vision-q' and its job
    'train', whose code prints 'alice-code'."""
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)
    cli("team", "add", "vision", "carol", env=ALICE, check=True)
    cli("queue", "create", "vision-q", "-e", "vision", env=ALICE, check=True)
    made = as_user(ALICE, "job", "create", "code", code_dir(tmp_path / "alice", "alice-code"),
                   "-E", "python train.py", "-n", "train", "-e", "vision")  # fmt: skip
    assert (made["entity"], made["name"], made["version"], made["author"]) == (
        "vision", "train", 0, "alice"
    )  # fmt: skip
    return "vision-q"


def run_queue(queue: str) -> None:
    cli("agent", "-q", queue, "--burst", env=ALICE, check=True, timeout=120)


@pytest.mark.parametrize(
    "how",
    [
        ["job", "create", "code", "{evil}", "-E", "python train.py", "-n", "train", "-e", "vision"],
        ["job", "create", "image", "evil:1", "-E", "python train.py", "-n", "train", "-e",
         "vision"],
        ["job", "create", "git", "https://example.org/evil.git", "-E", "python train.py",
         "-n", "train", "-e", "vision"],
        ["job", "create", "code", "{evil}", "-E", "python train.py", "-n", "new", "-e", "vision"],
    ],
    ids=["code-version", "image-version", "git-version", "new-job"],
)  # fmt: skip
def test_an_outsider_cannot_publish_a_version_of_a_teams_job_and_the_team_still_runs_its_own(
    vision: str, home: Path, tmp_path: Path, how: list[str]
) -> None:
    evil = code_dir(tmp_path / "evil", "mallory-code")
    before = table_counts(home)
    message = refused(MALLORY, *[evil if a == "{evil}" else a for a in how])
    assert "user 'mallory' is not a member of entity 'vision'" in message
    what = "create jobs in" if "new" in how else "add versions to the jobs of"
    assert f"only members may {what} 'vision'" in message
    assert table_counts(home) == before
    # The team's next launch of `train` still runs alice's code.
    run = as_user(BOB, "launch", "-q", vision, "-j", "train")
    assert run["spec"]["job"] == "vision/train:v0"
    run_queue(vision)
    shown = as_user(BOB, "runs", "show", run["id"])
    assert shown["state"] == "finished", shown
    log = cli("logs", run["id"], env=BOB, check=True).stdout
    assert "alice-code" in log and "mallory-code" not in log


def test_an_outsider_cannot_slip_code_into_a_team_run_with_a_direct_launch(
    vision: str, home: Path, tmp_path: Path
) -> None:
    evil = code_dir(tmp_path / "train", "mallory-code")
    before = table_counts(home)
    message = refused(MALLORY, "launch", "-u", evil, "-E", "python train.py", "-e", "vision")
    assert "who is not a member of entity 'vision'" in message
    assert table_counts(home) == before


def test_a_job_name_is_unique_within_an_entity_not_across_the_store(
    vision: str, home: Path, tmp_path: Path
) -> None:
    evil = code_dir(tmp_path / "evil", "mallory-code")
    made = as_user(MALLORY, "job", "create", "code", evil, "-E", "python train.py", "-n", "train")
    assert (made["entity"], made["name"], made["version"], made["author"]) == (
        "mallory", "train", 0, "mallory"
    )  # fmt: skip
    team = as_user(BOB, "job", "show", "vision/train")
    assert team["versions"] == ["v0"] and team["author"] == "alice"
    assert {(j["entity"], j["name"]) for j in as_user(BOB, "job", "list")} == {
        ("vision", "train"), ("mallory", "train")
    }  # fmt: skip
    # A bare name resolves in the run's entity: the queue's, here.
    run = as_user(BOB, "launch", "-q", vision, "-j", "train")
    assert run["spec"]["job"] == "vision/train:v0" and run["entity"] == "vision"
    # Naming mallory's job into vision's queue is refused at launch: she is not a member.
    before = table_counts(home)
    message = refused(BOB, "launch", "-q", vision, "-j", "mallory/train")
    assert (
        "job mallory/train:v0 was written by 'mallory', who is not a member of entity 'vision'"
        in message
    )
    assert table_counts(home) == before
    # A name that exists only in another entity is not looked up there.
    cli("job", "create", "code", evil, "-E", "python train.py", "-n", "solo", env=MALLORY,
        check=True)  # fmt: skip
    message = refused(BOB, "launch", "-q", vision, "-j", "solo")
    assert "job 'solo' does not exist in entity 'vision' (a job of that name is in: mallory" in (
        message
    )
    # Where a bare name is ambiguous, `job show` says so and names the entities.
    message = refused(BOB, "job", "show", "train")
    assert "job name 'train' is used in several entities (mallory, vision)" in message
    assert as_user(MALLORY, "job", "show", "train")["entity"] == "mallory"  # her own first


def test_job_references_take_wandbs_entity_project_name_alias_form(vision: str) -> None:
    run = as_user(BOB, "launch", "-q", vision, "-j", "vision/uncategorized/train:v0")
    assert run["spec"]["job"] == "vision/train:v0"
    message = refused(BOB, "launch", "-q", vision, "-j", "vision/elsewhere/train")
    assert "job 'vision/train' is in project 'uncategorized', not 'elsewhere'" in message
    message = refused(BOB, "launch", "-q", vision, "-j", "a/b/c/train")
    assert "expected NAME, ENTITY/NAME or ENTITY/PROJECT/NAME" in message
    # An empty alias is a typo, not `latest` (an adversarial QA pass found it taken)
    message = refused(BOB, "launch", "-q", vision, "-j", "vision/train:")
    assert "invalid job 'vision/train:'" in message


def test_job_show_lists_the_author_of_each_version(vision: str, tmp_path: Path) -> None:
    cli("job", "create", "code", code_dir(tmp_path / "bob", "bob-code"), "-E", "python train.py",
        "-n", "train", "-e", "vision", env=BOB, check=True)  # fmt: skip
    shown = as_user(MALLORY, "job", "show", "vision/train")
    assert [(h["version"], h["author"]) for h in shown["history"]] == [
        ("v0", "alice"), ("v1", "bob")
    ]  # fmt: skip
    assert (shown["version"], shown["author"]) == (1, "bob")
    text = cli("job", "show", "vision/train:v0", env=MALLORY, check=True).stdout
    assert "author:     alice" in text
    lines = [line for line in text.splitlines() if line.startswith("  v")]
    assert len(lines) == 2
    assert lines[0].startswith("  v0") and lines[0].endswith("by alice")
    assert lines[1].startswith("  v1") and lines[1].endswith("by bob")


def test_the_agent_refuses_a_version_row_written_by_hand_by_an_outsider(
    vision: str, home: Path, store: Store
) -> None:
    run_id = as_user(BOB, "launch", "-q", vision, "-j", "train")["id"]
    conn = sqlite3.connect(home / "launchctl.db")
    with conn:
        conn.execute(
            "INSERT INTO job_versions (job_id, version, digest, source, entrypoint, dockerfile,"
            " author, created_at) SELECT job_id, 1, 'hand-made', source, entrypoint, dockerfile,"
            " 'mallory', created_at FROM job_versions WHERE id = (SELECT job_version_id"
            " FROM runs WHERE id = ?)",
            [run_id],
        )
        conn.execute(
            "UPDATE runs SET job_version_id = (SELECT id FROM job_versions"
            " WHERE digest = 'hand-made') WHERE id = ?",
            [run_id],
        )
    conn.close()
    run_queue(vision)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert run["reason"].startswith("the run breaks its queue's rules:")
    assert (
        "job vision/train:v1 was written by 'mallory', who is not a member of entity 'vision'"
        in run["reason"]
    )


def test_a_version_by_someone_who_left_the_team_no_longer_runs_in_it(
    vision: str, home: Path, store: Store, tmp_path: Path
) -> None:
    cli("job", "create", "code", code_dir(tmp_path / "carol", "carol-code"), "-E",
        "python train.py", "-n", "train", "-e", "vision", env=CAROL, check=True)  # fmt: skip
    run_id = as_user(BOB, "launch", "-q", vision, "-j", "train")["id"]
    cli("team", "remove", "vision", "carol", env=ALICE, check=True)
    run_queue(vision)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert "job vision/train:v1 was written by 'carol', who is not a member" in run["reason"]
    before = table_counts(home)
    message = refused(BOB, "runs", "rerun", run_id)
    assert "written by 'carol', who is not a member of entity 'vision'" in message
    assert table_counts(home) == before
    # Her earlier work aside, the team's other versions still run, and so do reruns.
    rerun_of = as_user(BOB, "launch", "-q", vision, "-j", "train:v0")["id"]
    again = as_user(BOB, "runs", "rerun", rerun_of)
    run_queue(vision)
    assert store.runs.get(again["id"])["state"] == "finished"


def test_upgrading_keeps_every_job_and_trusts_an_old_version_once_a_member_vouches_for_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlite_utils import Database

    from launchctl.store.migrations import m006_job_entities, migrations

    home.mkdir()
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    old = Database(home / "launchctl.db")
    migrations.apply(old, stop_before="m006_job_entities")
    remote, entry = "https://example.org/train.git", ["python", "train.py"]
    old.execute(
        "INSERT INTO jobs (id, name, source_type, entity, project, created_at)"
        " VALUES (7, 'train', 'git', 'alice', 'p', 100.0)"
    )
    old.execute(
        "INSERT INTO job_versions (id, job_id, version, digest, source, entrypoint, created_at)"
        " VALUES (11, 7, 0, ?, ?, ?, 100.0)",
        [
            jobs._version_key("git", remote, None, entry, None),
            json.dumps({"git": {"remote": remote, "commit": None}}),
            json.dumps(entry),
        ],
    )
    old.execute(
        "INSERT INTO runs (id, queue_id, queue_name, job_version_id, name, project, entity,"
        " resource, spec, state, created_at, updated_at) VALUES ('oldrun01', 1, 'default', 11,"
        " 'train-old', 'p', 'alice', 'local-process', '{}', 'finished', 100.0, 100.0)"
    )
    old.conn.commit()
    old.close()

    shown = as_user(ALICE, "job", "show", "alice/train")  # opening the store migrates it
    assert (shown["id"], shown["job_id"], shown["author"]) == (11, 7, None)
    assert as_user(ALICE, "runs", "show", "oldrun01")["job_version_id"] == 11
    text = cli("job", "show", "train", env=ALICE, check=True).stdout
    assert "by unknown (made before authors were recorded)" in text
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
        assert applied.count("m006_job_entities") == 1
    finally:
        conn.close()
    # Nobody knows who wrote the old version: it does not run until a member vouches for it.
    message = refused(ALICE, "launch", "-q", "default", "-j", "train")
    assert "job alice/train:v0 has no recorded author" in message
    vouched = as_user(ALICE, "job", "create", "git", remote, "-E", "python train.py", "-n",
                      "train")  # fmt: skip
    assert (vouched["version"], vouched["author"], vouched["created"]) == (0, "alice", False)
    assert as_user(ALICE, "launch", "-q", "default", "-j", "train")["job_version_id"] == 11
    # Names are now per entity; and the step, run again, changes nothing.
    cli("job", "create", "git", remote, "-E", "python train.py", "-n", "train", env=BOB,
        check=True)  # fmt: skip
    db = Database(home / "launchctl.db")
    try:
        schema = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        m006_job_entities(db)
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    finally:
        db.close()
    assert {(j["entity"], j["name"]) for j in as_user(ALICE, "job", "list")} == {
        ("alice", "train"), ("bob", "train")
    }  # fmt: skip


def _drain(agent: Any, run_ids: list[str], store: Store) -> None:
    """Passes of one live agent until these runs have ended (the agent is not restarted)."""
    from launchctl.states import TERMINAL

    def ended() -> bool:
        agent.run_once()
        return all(store.runs.state(r) in TERMINAL for r in run_ids)

    wait_for(ended, 60, interval=0.01, what=f"runs {run_ids} to end")


def test_a_member_removed_while_the_agent_runs_is_refused_at_the_next_run(
    vision: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 keeps the roles an agent reads for each run it starts from one write to the
    next. Who could get around that: a member an admin removes (in another process) while
    the agent that already started her runs keeps going. Her run queued before the
    removal must still be refused: the agent reads her role again."""
    from launchctl.agent import Agent, AgentOptions

    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    agent = Agent(store, [vision], AgentOptions(max_jobs=1), say=lambda _l: None)
    agent.start()
    # The first run unpacks the job (a worker thread); the second starts in the agent's
    # loop, its roles read inside its claim's write and kept.
    first = [as_user(BOB, "launch", "-q", vision, "-j", "train")["id"] for _ in range(2)]
    _drain(agent, first, store)
    assert [store.runs.state(r) for r in first] == ["finished", "finished"]
    assert agent._quick  # the job's runs now start in the loop
    last = as_user(BOB, "launch", "-q", vision, "-j", "train")["id"]
    cli("team", "remove", "vision", "bob", env=ALICE, check=True)
    _drain(agent, [last], store)
    run = store.runs.get(last)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert run["reason"].startswith("the run breaks its queue's rules:"), run["reason"]
    assert "user 'bob' is not a member of entity 'vision'" in run["reason"]
    if agent._pool is not None:
        agent._pool.shutdown(wait=True)


def test_a_member_removed_while_her_run_is_held_for_a_slot_is_refused_at_its_start(
    vision: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: an agent whose runs are short holds the next one ready (claimed, its
    roles read) while its slots are busy. Who could get around that: a member an admin
    removes (in another process) while her run is held. When the slot frees, the run's
    roles are read again: it fails at stage agent, never started."""
    import threading

    from launchctl.agent import Agent, AgentOptions, loop

    monkeypatch.setattr(loop, "AHEAD_RUN_S", 60.0)  # the quick runs here count as short
    monkeypatch.setattr(loop, "AHEAD_HOLD_S", 600.0)
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    for _ in range(6):
        as_user(BOB, "launch", "-q", vision, "-j", "train")
    longs = [as_user(BOB, "launch", "-q", vision, "-j", "train", "-E", "sleep 120")["id"]
             for _ in range(2)]  # fmt: skip
    held = as_user(BOB, "launch", "-q", vision, "-j", "train")["id"]
    agent = Agent(store, [vision], AgentOptions(max_jobs=2, fallback_poll_s=30),
                  say=lambda _l: None)  # fmt: skip
    agent.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    view = Store(store.root)  # the store as another process sees it
    try:
        wait_for(
            lambda: (
                all(view.runs.state(r) == "running" for r in longs)
                and view.runs.state(held) == "starting"
            ),
            60,
            what="both slots busy and bob's next run held",
        )
        cli("team", "remove", "vision", "bob", env=ALICE, check=True)
        view.runs.request_cancel(longs[0])  # a slot frees
        wait_for(lambda: view.runs.state(held) == "failed", 60, what="the held run's refusal")
    finally:
        for _ in range(2):  # as two signals would: the loop stops everything itself
            agent.signalled()
        thread.join(timeout=60)
    run = view.runs.get(held)
    assert (run["stage"], run["pid"]) == ("agent", None), run
    assert run["reason"].startswith("the run breaks its queue's rules:"), run["reason"]
    assert "user 'bob' is not a member of entity 'vision'" in run["reason"]
    moves = [e["to_state"] for e in view.runs.events(held) if e["from_state"] != e["to_state"]]
    assert "running" not in moves, moves
