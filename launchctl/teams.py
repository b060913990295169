"""Entities (teams) and roles: who may edit an entity's queues and who may launch into them.

The trust model is local: identity is the OS user or ``LAUNCHCTL_USER``, and anyone who
can write the SQLite file can change it, so the agent re-checks runs before it runs them.
"""

from __future__ import annotations

from typing import NoReturn

from launchctl import identity
from launchctl.errors import LaunchctlError
from launchctl.names import check_identifier
from launchctl.store import Row, Store
from launchctl.store.teams import missing


class PermissionDenied(LaunchctlError):
    """A user acting on an entity in a way their role there does not allow."""


def check_user(user: str) -> str:
    if not user or len(user) > 128 or not user.isprintable() or any(c.isspace() for c in user):
        raise LaunchctlError(
            f"invalid user name {user!r}: use 1-128 printable characters without spaces"
        )
    return user


def require_admin(
    store: Store, entity: str, user: str | None = None, action: str = "edit the queues of"
) -> str:
    """Refuse unless ``user`` (default: the current user) is an admin of ``entity``.

    ``action`` completes "only admins may ... 'ENTITY'"; returns the user.
    """
    user = user or identity.current_user()
    role = store.teams.role(entity, user)
    if role == "admin":
        return user
    if role is None and not store.teams.exists(entity):
        raise missing(entity)
    raise PermissionDenied(
        f"user '{user}' is not an admin of entity '{entity}': only admins may {action} '{entity}'"
    )


def require_member(
    store: Store, entity: str, user: str | None = None, action: str = "launch into the queues of"
) -> str:
    """Refuse unless ``user`` (default: the current user) is a member or admin of ``entity``.

    ``action`` completes "only members may ... 'ENTITY'"; returns the user.
    """
    user = user or identity.current_user()
    if store.teams.role(entity, user) is not None:
        return user
    refuse_member(store, entity, user, action)


def refuse_member(store: Store, entity: str, user: str, action: str) -> NoReturn:
    """Why ``user``, who has no role in ``entity``, is refused."""
    if not store.teams.exists(entity):
        raise missing(entity)
    raise PermissionDenied(
        f"user '{user}' is not a member of entity '{entity}': only members may {action} '{entity}'"
    )


def create(store: Store, name: str) -> Row:
    """A new entity; the current user becomes its admin."""
    check_identifier(name, "entity")
    return store.teams.create(name, identity.current_user())


def ensure_personal(store: Store, user: str | None = None) -> str:
    """The user's own entity (named after them), made with them as admin if it is missing.

    What a queue belongs to when nobody names an entity, as in W&B where every user has
    a personal entity. An existing one is left as it is, whoever administers it.
    """
    user = user or identity.current_user()
    store.teams.create(user, user, exist_ok=True)
    return user


def add(store: Store, entity: str, user: str, *, admin: bool = False) -> str | None:
    """Add ``user`` to ``entity`` or change their role (admins only); returns the old role."""
    check_user(user)
    actor = identity.current_user()
    return store.teams.add(
        entity,
        user,
        "admin" if admin else "member",
        authorize=lambda: require_admin(store, entity, actor, action="add members to"),
    )


def remove(store: Store, entity: str, user: str) -> str:
    """Remove ``user`` from ``entity``; only its admins may. Returns the role they had."""
    actor = identity.current_user()
    return store.teams.remove(
        entity,
        user,
        authorize=lambda: require_admin(store, entity, actor, action="remove members from"),
    )


def listing(store: Store, user: str | None = None) -> list[Row]:
    """Every entity with its counts and ``role``: the user's role there, or None."""
    user = user or identity.current_user()
    rows = store.teams.all()
    for row in rows:
        row["role"] = store.teams.role(row["name"], user)
    return rows


def show(store: Store, entity: str, user: str | None = None) -> Row:
    """One entity: its counts, the user's ``role`` there and its ``members`` with roles."""
    user = user or identity.current_user()
    row = store.teams.get(entity)
    row["role"] = store.teams.role(entity, user)
    row["members"] = store.teams.members(entity)
    return row


def require_canceller(
    store: Store, run: Row, user: str | None = None, *, action: str = "cancel"
) -> str:
    """Refuse unless ``user`` (default: the current user) may cancel ``run``: its author,
    or an admin of the run's entity or of the entity that owns its queue. Returns the user.
    ``action`` names what was asked in the refusal (``edit`` decides by the same rule).
    """
    user = user or identity.current_user()
    author = run["spec"].get("author")
    if author is not None and author == user:
        return user
    queue = store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
    entities = list(dict.fromkeys(e for e in (run["entity"], queue and queue["entity"]) if e))
    if any(store.teams.role(str(entity), user) == "admin" for entity in entities):
        return user
    admins = " or ".join(f"'{e}'" for e in entities) or "its entity"
    raise PermissionDenied(
        f"user '{user}' may not {action} run {run['id']}: only its author"
        f" ('{author or 'unknown'}') or an admin of entity {admins} may"
    )


# Launch-spec keys that change how a queue runs work: admins only. Members set template
# variables, run_config, args and entry point, nothing else of the queue's.
ADMIN_ONLY_SPEC_KEYS = ("resource_args", "builder", "registry")


def check_launch(store: Store, queue: Row, spec: dict[str, object], user: str | None = None) -> str:
    """Refuse a launch into ``queue`` that its launcher's role does not allow; returns the user.

    Called at launch and again by the agent, with the user the run records as its author.
    """
    entity = str(queue["entity"])
    user = user or identity.current_user()
    role = store.teams.role(entity, user)  # read once: a member's, or an admin's
    if role is None:
        refuse_member(store, entity, user, "launch into the queues of")
    if role == "admin":
        return user
    for key in ADMIN_ONLY_SPEC_KEYS:
        if spec.get(key):
            flag = {"resource_args": "--resource-args (-R)"}.get(key, f"'{key}' in the spec")
            raise PermissionDenied(
                f"user '{user}' is a member of entity '{entity}', not an admin: members may set"
                f" only template variables (--set-var) of queue {queue['name']}, not {flag}"
            )
    return user
