"""Numbered schema migrations, applied on open (sqlite-utils ``Migrations``).

sqlite-utils is imported only when a migration is pending; ``NAMES`` lets the store
check that without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from launchctl import identity
from launchctl.states import EventKind, State

if TYPE_CHECKING:
    from sqlite_utils import Database, Migrations

SET_NAME = "launchctl"
_STEPS: list[Callable[[Database], None]] = []


# Steps that run their own transaction (see ``own_transaction``).
_OWN_TRANSACTION: set[str] = set()


def step(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    _STEPS.append(fn)
    return fn


def own_transaction(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """Mark a step that opens and commits its own transaction (under ``@step``).

    SQLite ignores ``PRAGMA foreign_keys`` inside a transaction, and a table rebuild
    needs them off. sqlite-utils records such a step after it commits, so it must be
    safe to run again: it checks first whether its work is already done.
    """
    _OWN_TRANSACTION.add(fn.__name__)
    return fn


@step
def m001_initial(db: Database) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    schema = """
        CREATE TABLE queues (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            entity TEXT NOT NULL,
            resource TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            description TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );

        -- Code snapshots, content-addressed: the same files give the same digest.
        CREATE TABLE snapshots (
            digest TEXT PRIMARY KEY,
            files INTEGER NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            source_type TEXT NOT NULL CHECK (source_type IN ('code', 'image', 'git')),
            entity TEXT NOT NULL,
            project TEXT NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TABLE job_versions (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            digest TEXT NOT NULL,
            source TEXT NOT NULL,
            entrypoint TEXT NOT NULL,
            dockerfile TEXT,
            created_at REAL NOT NULL,
            UNIQUE (job_id, version),
            UNIQUE (job_id, digest)
        );

        CREATE TABLE runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            queue_id INTEGER REFERENCES queues(id) ON DELETE SET NULL,
            queue_name TEXT,
            job_version_id INTEGER REFERENCES job_versions(id),
            name TEXT NOT NULL,
            project TEXT NOT NULL,
            entity TEXT NOT NULL,
            resource TEXT NOT NULL,
            spec TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 2,
            state TEXT NOT NULL,
            stage TEXT,
            reason TEXT,
            exit_code INTEGER,
            agent_id TEXT,
            lease_expires_at REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            pid INTEGER,
            pid_started TEXT,
            workdir TEXT,
            log_path TEXT,
            resume_count INTEGER NOT NULL DEFAULT 0,
            rerun_of TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL
        );
        CREATE INDEX runs_claim ON runs (queue_id, state, priority, seq);
        CREATE INDEX runs_agent ON runs (agent_id, state);

        -- One row for every state change: history is never lost.
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            agent_id TEXT,
            message TEXT
        );
        CREATE INDEX events_run ON events (run_id, id);

        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            queues TEXT NOT NULL,
            max_jobs INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stopped_at REAL
        );
    """
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)
    now = time.time()
    db.execute(
        "INSERT INTO queues (name, entity, resource, config, description, created_at, updated_at)"
        " VALUES ('default', ?, 'local-process', '{}', 'Runs local processes on this machine.',"
        " ?, ?)",
        [identity.default_entity(), now, now],
    )


@step
def m002_run_image(db: Database) -> None:
    """The image a container run uses: what the ${image_uri} macro resolves to."""
    db.execute("ALTER TABLE runs ADD COLUMN image TEXT")


@step
def m003_teams(db: Database) -> None:
    """Entities (teams) and their members; the user who opens the store becomes an admin.

    On a new store that is the default entity. On an older store it is also every entity
    its queues name: before roles anyone could edit any queue, and an entity with no admin
    could never get one, so the user running the upgrade takes it and can hand it on.
    """
    for statement in (
        "CREATE TABLE entities (name TEXT PRIMARY KEY, created_at REAL NOT NULL)",
        "CREATE TABLE members ("
        " entity TEXT NOT NULL REFERENCES entities(name) ON DELETE CASCADE,"
        " user TEXT NOT NULL,"
        " role TEXT NOT NULL CHECK (role IN ('admin', 'member')),"
        " added_at REAL NOT NULL,"
        " PRIMARY KEY (entity, user))",
    ):
        db.execute(statement)
    now = time.time()
    db.execute(
        "INSERT INTO entities (name, created_at) VALUES (?, ?)", [identity.default_entity(), now]
    )
    db.execute(
        "INSERT OR IGNORE INTO entities (name, created_at)"
        " SELECT entity, MIN(created_at) FROM queues GROUP BY entity"
    )
    db.execute(
        "INSERT INTO members (entity, user, role, added_at)"
        " SELECT name, ?, 'admin', ? FROM entities",
        [identity.current_user(), now],
    )


@step
def m004_gpus(db: Database) -> None:
    """GPUs: each machine's devices, which run holds which (and which run they are kept
    for), the devices on the run's record, and a trigger that frees them in the same
    transaction as any move out of the held states, however the run ends."""
    for statement in (
        "ALTER TABLE runs ADD COLUMN devices TEXT",
        "CREATE TABLE gpus ("
        " host TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, memory_mb INTEGER,"
        " uuid TEXT, source TEXT NOT NULL, reported_at REAL NOT NULL,"
        " PRIMARY KEY (host, idx))",
        "CREATE TABLE gpu_allocations ("
        " host TEXT NOT NULL, idx INTEGER NOT NULL,"
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " sharing INTEGER NOT NULL DEFAULT 1, agent_id TEXT, at REAL NOT NULL,"
        " PRIMARY KEY (host, idx, run_id))",
        "CREATE INDEX gpu_allocations_run ON gpu_allocations (run_id)",
        "CREATE TABLE gpu_reservations ("
        " host TEXT NOT NULL, idx INTEGER NOT NULL,"
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " agent_id TEXT, at REAL NOT NULL, PRIMARY KEY (host, idx))",
        "CREATE TRIGGER runs_free_gpus AFTER UPDATE OF state ON runs"
        " WHEN NEW.state NOT IN ('claimed', 'building', 'starting', 'running')"
        " BEGIN"
        "  DELETE FROM gpu_allocations WHERE run_id = NEW.id;"
        "  DELETE FROM gpu_reservations WHERE run_id = NEW.id AND NEW.state != 'queued';"
        "  UPDATE runs SET devices = NULL WHERE id = NEW.id AND NEW.state = 'queued';"
        " END",
    ):
        db.execute(statement)


@step
def m005_recovery(db: Database) -> None:
    """Requeues and retries: a requeued run goes to the end of its queue (``enqueued_at``),
    a retry may wait (``not_before``), and retries are counted apart from preemptions."""
    db.execute("ALTER TABLE runs ADD COLUMN enqueued_at REAL")
    db.execute("UPDATE runs SET enqueued_at = created_at")
    db.execute("ALTER TABLE runs ADD COLUMN not_before REAL")
    db.execute("ALTER TABLE runs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0")
    db.execute("DROP INDEX IF EXISTS runs_claim")
    db.execute("CREATE INDEX runs_claim ON runs (queue_id, state, priority, enqueued_at, seq)")


@step
@own_transaction
def m006_job_entities(db: Database) -> None:
    """Jobs belong to an entity: a job's name is unique within its entity, not across the
    store (``UNIQUE (entity, name)`` instead of ``UNIQUE (name)``), and every version
    records its author, the user who wrote it.

    Versions made before this step keep ``author`` NULL: nobody recorded who wrote them,
    and the store cannot tell a team's own version from one an outsider added, so they are
    not trusted until a member of the job's entity publishes the same content again.

    ``jobs`` is rebuilt by SQLite's documented procedure (foreign keys off, else dropping
    the old table would cascade to every version; one transaction; ids kept, so versions
    and runs still point at the same jobs; ``foreign_key_check`` before the commit).
    """
    conn = db.conn
    if any(row[1] == "author" for row in conn.execute("PRAGMA table_info(job_versions)")):
        return  # done by a process that stopped before sqlite-utils recorded it
    if conn.in_transaction:
        raise RuntimeError("m006_job_entities must run outside a transaction")
    fk_was_on = bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
            raise RuntimeError("m006_job_entities could not turn foreign keys off")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in (
                "CREATE TABLE jobs_m006 ("
                " id INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " source_type TEXT NOT NULL CHECK (source_type IN ('code', 'image', 'git')),"
                " entity TEXT NOT NULL,"
                " project TEXT NOT NULL,"
                " created_at REAL NOT NULL,"
                " UNIQUE (entity, name))",
                "INSERT INTO jobs_m006 (id, name, source_type, entity, project, created_at)"
                " SELECT id, name, source_type, entity, project, created_at FROM jobs",
                "DROP TABLE jobs",
                "ALTER TABLE jobs_m006 RENAME TO jobs",
                "ALTER TABLE job_versions ADD COLUMN author TEXT",
            ):
                conn.execute(statement)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"m006_job_entities broke foreign keys: {broken[:3]}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if fk_was_on else 'OFF'}")


def free_gpus_trigger() -> str:
    """The trigger that frees a run's GPUs in the same transaction as any move out of the
    held states (``launchctl.states.ACTIVE``): its allocations go, its reservations go
    unless it is waiting again, and a run back in its queue forgets its devices.

    Built from the named sets. A migration that ran keeps the text it ran with, so a
    change to ``ACTIVE`` needs a new step that re-creates the trigger (a test compares).
    """
    from launchctl.store.runs import HELD, WAITING

    return (
        "CREATE TRIGGER runs_free_gpus AFTER UPDATE OF state ON runs"
        f" WHEN NEW.state NOT IN {HELD}"
        " BEGIN"
        "  DELETE FROM gpu_allocations WHERE run_id = NEW.id;"
        f"  DELETE FROM gpu_reservations WHERE run_id = NEW.id AND NEW.state NOT IN {WAITING};"
        f"  UPDATE runs SET devices = NULL WHERE id = NEW.id AND NEW.state IN {WAITING};"
        " END"
    )


@step
def m007_run_states(db: Database) -> None:
    """Run states from one place: the GPU-freeing trigger is re-created from the named
    sets of ``launchctl.states`` (``m004_gpus`` spelled them out), and events get a
    ``kind``, so a takeover is marked instead of told by its message's text. Takeovers
    recorded before are marked here, the one time that text is read."""
    db.execute("ALTER TABLE events ADD COLUMN kind TEXT")
    db.execute(
        "UPDATE events SET kind = ? WHERE from_state = to_state"
        " AND substr(message, 1, 10) = 'taken over'",
        [EventKind.TAKEOVER.value],
    )
    db.execute("DROP TRIGGER IF EXISTS runs_free_gpus")
    db.execute(free_gpus_trigger())


@step
def m008_wandb_shapes(db: Database) -> None:
    """W&B's shapes (issue 11): a job's own aliases (``wandb job create -a``) beside
    ``latest`` and ``vN``; a version's description and W&B job metadata (runtime, build
    context, base image); a queue config kept as its admin wrote it (the resource args
    body alone, as W&B's queue editor holds it) beside the canonical form runs read."""
    db.execute(
        "CREATE TABLE job_aliases ("
        " job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " alias TEXT NOT NULL,"
        " version_id INTEGER NOT NULL REFERENCES job_versions(id) ON DELETE CASCADE,"
        " created_at REAL NOT NULL,"
        " PRIMARY KEY (job_id, alias))"
    )
    db.execute("ALTER TABLE job_versions ADD COLUMN description TEXT")
    db.execute("ALTER TABLE job_versions ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE queues ADD COLUMN config_written TEXT")


@step
def m009_sync(db: Database) -> None:
    """Sync with a W&B-compatible server (issue 13).

    ``settings``: the store's own key/value settings (``sync.base_url``, ``sync.entity``,
    ``sync.project``, ``sync.key_secret``: the name of the secret that holds the API key,
    never the key itself).

    ``sync_cursors``: what one server has of one run, so a sync is resumable and sends
    nothing twice: the fingerprint of the last ``UpsertBucket``, how many lines (and the
    bytes they covered) of the run's log the ``file_stream`` has, the summary's
    fingerprint, whether ``wandb-metadata.json`` and the final ``complete`` were sent.

    ``wandb_offline_syncs``: a run's own ``wandb/offline-run-*`` folders that W&B's
    ``wandb sync`` uploaded, and the W&B run each became.

    ``remote_items``: a W&B run-queue item this store pulled (a local run now carries it)
    or pushed; ``sync_outbox``: calls owed to a server that could not be made offline
    (a push to a remote queue, an ack or fail of a pulled item), sent by the next sync.
    """
    db.execute(
        "CREATE TABLE settings ("
        " key TEXT PRIMARY KEY,"
        " value TEXT NOT NULL,"
        " updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE sync_cursors ("
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " base_url TEXT NOT NULL,"
        " entity TEXT NOT NULL,"
        " project TEXT NOT NULL,"
        " upserted TEXT,"
        " log_lines INTEGER NOT NULL DEFAULT 0,"
        " log_bytes INTEGER NOT NULL DEFAULT 0,"
        " summary TEXT,"
        " metadata_sent INTEGER NOT NULL DEFAULT 0,"
        " completed INTEGER NOT NULL DEFAULT 0,"
        " remote_url TEXT,"
        " last_error TEXT,"
        " updated_at REAL NOT NULL,"
        " PRIMARY KEY (run_id, base_url, entity, project))"
    )
    db.execute(
        "CREATE TABLE wandb_offline_syncs ("
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " base_url TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " wandb_run_path TEXT,"
        " synced_at REAL NOT NULL,"
        " PRIMARY KEY (run_id, base_url, folder))"
    )
    db.execute(
        "CREATE TABLE remote_items ("
        " id INTEGER PRIMARY KEY,"
        " run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,"
        " direction TEXT NOT NULL,"
        " base_url TEXT NOT NULL,"
        " entity TEXT NOT NULL,"
        " project TEXT NOT NULL,"
        " queue TEXT NOT NULL,"
        " item_id TEXT,"
        " agent_id TEXT,"
        " acked_at REAL,"
        " failed_at REAL,"
        " created_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX remote_items_run ON remote_items (run_id)")
    db.execute(
        "CREATE TABLE sync_outbox ("
        " id INTEGER PRIMARY KEY,"
        " base_url TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " payload TEXT NOT NULL,"
        " run_id TEXT REFERENCES runs(id) ON DELETE CASCADE,"
        " created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT,"
        " sent_at REAL)"
    )


@step
def m010_sweeps(db: Database) -> None:
    """Sweeps on queues (issue 15).

    ``sweeps``: one row per sweep: its W&B sweep config as given (without the
    ``scheduler`` and ``launch`` blocks, which are kept apart as W&B hands them to its
    scheduler), the queue its trials go to, ``num_workers`` and ``run_cap``, the metric,
    its state (running, paused, finished, stopped, cancelled, failed) and why, and which
    agent schedules it now (``scheduler_agent`` holds it until ``scheduler_lease``), so
    two agents never both schedule one sweep, and a killed scheduler's sweep is taken
    up again.

    ``sweep_trials``: one row per trial, numbered in the order the search proposed them
    (``seq``), with its parameters, the run that carries it (a run of the sweep's queue),
    and once known its metric (and where the metric was read from) or why it has none.
    A trial and its run are written in one transaction: none is lost, none runs twice.
    """
    db.execute(
        "CREATE TABLE sweeps ("
        " id TEXT PRIMARY KEY,"
        " entity TEXT NOT NULL,"
        " project TEXT NOT NULL,"
        " queue_name TEXT NOT NULL,"
        " config TEXT NOT NULL,"
        " scheduler TEXT NOT NULL DEFAULT '{}',"
        " launch TEXT NOT NULL DEFAULT '{}',"
        " method TEXT NOT NULL,"
        " metric_name TEXT,"
        " metric_goal TEXT,"
        " num_workers INTEGER NOT NULL,"
        " run_cap INTEGER,"
        " state TEXT NOT NULL,"
        " reason TEXT,"
        " author TEXT NOT NULL,"
        " scheduler_agent TEXT,"
        " scheduler_lease REAL,"
        " created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL,"
        " ended_at REAL)"
    )
    db.execute(
        "CREATE TABLE sweep_trials ("
        " sweep_id TEXT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,"
        " seq INTEGER NOT NULL,"
        " run_id TEXT UNIQUE REFERENCES runs(id) ON DELETE SET NULL,"
        " params TEXT NOT NULL,"
        " metric REAL,"
        " metric_source TEXT,"
        " outcome TEXT,"
        " created_at REAL NOT NULL,"
        " scored_at REAL,"
        " PRIMARY KEY (sweep_id, seq))"
    )


def hook_ends_trigger() -> str:
    """The trigger that records, in the same transaction as the move, every run that
    reaches a terminal state (``launchctl.states.TERMINAL``) and may be owed a hook: its
    queue's config lists hooks, or the agent that held it has hooks of its own
    (``agents.hooks``). The hooks are worked out from this row by an agent's hook
    dispatcher (``launchctl.hooks``). A run with no hook costs nothing more than the test.
    A config that is not JSON (never written so) is read as having no hooks: the test can
    never fail the move."""
    from launchctl.states import TERMINAL
    from launchctl.store.runs import sql_states

    ended = sql_states(TERMINAL)
    return (
        "CREATE TRIGGER runs_hook_ends AFTER UPDATE OF state ON runs"
        f" WHEN NEW.state IN {ended} AND OLD.state NOT IN {ended}"
        " AND (EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id AND hooks = 1)"
        "  OR EXISTS (SELECT 1 FROM queues WHERE id = NEW.queue_id AND CASE"
        "   WHEN json_valid(config) THEN json_array_length(config, '$.hooks') > 0 END))"
        " BEGIN"
        "  INSERT OR IGNORE INTO hook_ends (run_id, state, agent_id, queue_id, at)"
        "  VALUES (NEW.id, NEW.state, NEW.agent_id, NEW.queue_id,"
        "   (julianday('now') - 2440587.5) * 86400.0);"
        " END"
    )


@step
def m011_hooks(db: Database) -> None:
    """Hooks when a run ends (issue 18).

    ``hook_ends``: a run that reached a terminal state and whose hooks are not worked out
    yet, written by a trigger in the transaction of the move that ended it (so no end is
    missed, whoever moved it: an agent, a cancel from the CLI, a queue's deletion), when
    its queue or its agent has hooks (``agents.hooks``: the agent's config lists some).

    ``hook_deliveries``: the durable outbox: one row per hook owed to one ended run (a
    command, a webhook, a notification), the hook as it was configured, the facts of the
    run it is given, which agent owes it (``owner``, taken over when that agent is gone),
    and how it went: ``pending``, ``delivered``, ``failed`` or ``skipped`` (a notification
    with no desktop to show it), with its attempts.
    """
    db.execute(
        "CREATE TABLE hook_ends ("
        " run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,"
        " state TEXT NOT NULL,"
        " agent_id TEXT,"
        " queue_id INTEGER,"
        " at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE hook_deliveries ("
        " id INTEGER PRIMARY KEY,"
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " source TEXT NOT NULL CHECK (source IN ('queue', 'agent')),"
        " queue_id INTEGER,"
        " owner TEXT NOT NULL,"
        " owner_uid INTEGER NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('command', 'webhook', 'notify')),"
        " hook TEXT NOT NULL,"
        " facts TEXT NOT NULL,"
        " state TEXT NOT NULL DEFAULT 'pending'"
        "  CHECK (state IN ('pending', 'delivered', 'failed', 'skipped')),"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " max_attempts INTEGER NOT NULL,"
        " next_at REAL NOT NULL,"
        " last_error TEXT,"
        " created_at REAL NOT NULL,"
        " done_at REAL)"
    )
    db.execute("CREATE INDEX hook_deliveries_due ON hook_deliveries (state, owner, next_at)")
    db.execute("CREATE INDEX hook_deliveries_run ON hook_deliveries (run_id)")
    db.execute("ALTER TABLE agents ADD COLUMN hooks INTEGER NOT NULL DEFAULT 0")
    db.execute(hook_ends_trigger())


@step
def m012_workflows(db: Database) -> None:
    """When a queued run may be claimed (issue 18): ``held`` (``runs hold``), ``deps`` (how
    many runs it waits for, so a claim reads ``run_deps`` only for such runs) and
    ``run_deps``: one row per run it waits for, with how (``any``: that run ended; ``ok``:
    it finished; ``fail``: it ended otherwise). A delayed start (``launch --delay/--at``)
    is the retry backoff's ``not_before``. ``dep_id`` has no foreign key: an ended
    dependency may be deleted (``runs delete``), and a claim reads a deleted one as ended
    and not finished.
    """
    db.execute("ALTER TABLE runs ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE runs ADD COLUMN deps INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE TABLE run_deps ("
        " run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " dep_id TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('any', 'ok', 'fail')),"
        " PRIMARY KEY (run_id, dep_id))"
    )
    db.execute("CREATE INDEX run_deps_dep ON run_deps (dep_id)")
    # The queued runs that wait for others: what a claim pass checks for a dependency
    # that can no longer hold (``RunTable.end_doomed``), without reading the queue.
    db.execute(
        "CREATE INDEX runs_waiting_deps ON runs (queue_id)"
        f" WHERE deps > 0 AND state = '{State.QUEUED.value}'"
    )


@step
def m013_limits(db: Database) -> None:
    """Who holds a queue's slots, arrays, stuck runs (issue 18).

    ``author``: the launcher, a column (it was only in the spec) so a claim can count a
    user's runs in flight for a queue's ``limits.per_user``. ``array_id``/``array_index``/
    ``array_limit``: a run of ``launch --array 0-15%4``, its index, and how many of its
    array may be in flight at once (a claim counts them). ``stalled_at``: when the agent
    found a running run silent for its queue's ``stall_after`` (cleared when it speaks).
    """
    for column in ("author TEXT", "array_id TEXT", "array_index INTEGER",
                   "array_limit INTEGER", "stalled_at REAL"):  # fmt: skip
        db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    db.execute("UPDATE runs SET author = json_extract(spec, '$.author')")
    db.execute("CREATE INDEX runs_author ON runs (queue_id, author, state)")
    db.execute("CREATE INDEX runs_array ON runs (array_id, state) WHERE array_id IS NOT NULL")


NAMES = [fn.__name__ for fn in _STEPS]


def __getattr__(name: str) -> Any:
    """``migrations``: the sqlite-utils migration set, built on first use."""
    if name != "migrations":
        raise AttributeError(name)
    from sqlite_utils import Migrations

    built: Migrations = Migrations(SET_NAME)
    for fn in _STEPS:
        built(transactional=fn.__name__ not in _OWN_TRANSACTION)(fn)
    globals()["migrations"] = built
    return built
