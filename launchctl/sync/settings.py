"""The store's sync settings: which keys there are, what their values may be, who may
change them, and what ``launchctl sync config`` shows.

The settings are store-wide (every user of a shared store syncs with them), so only an
admin of the store's own entity (the default entity of the user who created the store)
may change them. ``sync.key_secret`` holds a secret's name, never a key: the secret must
exist and be readable by whoever sets it (secrets belong to the OS user who runs the
agent, launchctl/secrets.py).
"""

from __future__ import annotations

from typing import Any

from launchctl import identity, names
from launchctl.errors import LaunchctlError, UsageError
from launchctl.store import Store
from launchctl.store.settings import SettingsTable
from launchctl.sync import credentials

KEYS = {
    "sync.base_url": "the W&B server's URL (after --base-url and WANDB_BASE_URL)",
    "sync.entity": "the W&B entity runs are synced to (default: each run's own)",
    "sync.project": "the W&B project runs are synced to (default: each run's own)",
    "sync.key_secret": "the launchctl secret that holds the API key (after WANDB_API_KEY)",
}


def key_name(key: str) -> str:
    """``sync.base_url`` from ``sync.base_url``, ``base_url`` or ``base-url``."""
    full = key if key.startswith("sync.") else f"sync.{key}"
    full = full.replace("-", "_")
    if full not in KEYS:
        raise UsageError(f"unknown setting {ascii(key)[:60]}: use one of {', '.join(sorted(KEYS))}")
    return full


def check(key: str, value: str) -> str:
    """``value`` checked (and normalised) for the setting ``key``."""
    if key == "sync.base_url":
        return credentials.normalise_url(value, "--base-url")
    if key == "sync.entity":
        return names.check_name(value, "entity")
    if key == "sync.project":
        return names.check_name(value, "project")
    if key == "sync.key_secret":
        from launchctl.secrets import SecretStore, check_name

        check_name(value)
        if value not in SecretStore().names():
            raise LaunchctlError(
                f"secret {value!r} is not set: store the API key first"
                f" (launchctl secret set {value}), then name it here"
            )
        return value
    raise UsageError(f"unknown setting {ascii(key)[:60]}")  # pragma: no cover


def require_owner(store: Store, user: str | None = None) -> str:
    """Refuse unless ``user`` (default: the current one) is an admin of the store's entity."""
    from launchctl.teams import PermissionDenied

    user = user or identity.current_user()
    entity = SettingsTable(store.db).store_entity()
    if entity is not None and store.teams.role(entity, user) == "admin":
        return user
    raise PermissionDenied(
        f"user '{user}' is not an admin of entity '{entity}', the store's own:"
        " only its admins may change the sync settings every user of this store shares"
    )


def configure(store: Store, values: dict[str, str], unset: list[str]) -> dict[str, Any]:
    """Set ``values`` and remove ``unset`` (setting names) in one transaction, after
    checking every value and the user's role; nothing is written when anything is wrong.
    Returns what ``show`` returns."""
    checked = {key_name(k): v for k, v in values.items()}
    removed = [key_name(k) for k in unset]
    both = sorted(set(checked) & set(removed))
    if both:
        raise UsageError(f"{both[0]} is both set and unset: give one or the other")
    checked = {k: check(k, v) for k, v in checked.items()}
    user = identity.current_user()
    SettingsTable(store.db).change(checked, removed, authorize=lambda: require_owner(store, user))
    return show(store)


def show(store: Store, base_url: str | None = None) -> dict[str, Any]:
    """The settings, and what they resolve to now: the base URL and where it comes from,
    and whether a key is found and where (never the key)."""
    stored = {r["key"]: r["value"] for r in SettingsTable(store.db).all("sync.")}
    out: dict[str, Any] = {"settings": {k: stored.get(k) for k in KEYS}}
    try:
        creds = credentials.resolve(base_url, store=store)
    except LaunchctlError as exc:
        out.update(base_url=None, base_url_source=None, api_key="unknown", key_source=None)
        out["error"] = str(exc)
        return out
    out.update(
        base_url=creds.base_url,
        base_url_source=creds.url_source,
        api_key=creds.key_shown(),
        key_source=creds.key_source,
    )
    return out
