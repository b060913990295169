"""Which W&B server to sync with and which API key to use, each with where it came from.

The base URL, first found wins: ``--base-url``, ``WANDB_BASE_URL``, the store setting
``sync.base_url``, W&B's own settings file (``$WANDB_CONFIG_DIR/settings``, else
``~/.config/wandb/settings``, section ``[default]``, key ``base_url``: what ``wandb login
--host`` writes; wandb/sdk/wandb_setup.py and wandb/sdk/lib/settings_file.py), then
``https://api.wandb.ai``.

The API key, first found wins: ``WANDB_API_KEY`` (wandb/env.py ``API_KEY``), the launchctl
secret that the store setting ``sync.key_secret`` names, then the netrc file (``$NETRC``,
else ``~/.netrc``) entry for the base URL's host and port, as ``wandb login`` writes it
(wandb/sdk/lib/wbauth/wbnetrc.py ``write_netrc_auth``: ``machine HOST[:PORT]``, ``login
user``, ``password KEY``). The key is held only in memory: never stored, printed or put
in an error; ``Credentials`` shows only where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from launchctl.errors import LaunchctlError
from launchctl.store import Store
from launchctl.store.settings import SettingsTable
from launchctl.sync.wire import Credentials, one_line

DEFAULT_BASE_URL = "https://api.wandb.ai"
BASE_URL_SETTING = "sync.base_url"
KEY_SECRET_SETTING = "sync.key_secret"


class BadBaseURL(LaunchctlError):
    """A base URL that is not a plain http(s) URL."""


def normalise_url(url: str, source: str = "--base-url") -> str:
    """``url`` without its trailing slash; refused (one line naming ``source``) unless it
    is an http(s) URL with a host and no credentials, query or fragment in it."""
    text = url.strip() if isinstance(url, str) else ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise BadBaseURL(f"the W&B base URL from {source} is not a URL") from None
    where = f"the W&B base URL from {source}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = one_line(f"{parts.scheme}://{parts.hostname or ''}", 80) if parts.scheme else ""
        raise BadBaseURL(
            f"{where} must be an http:// or https:// URL with a host"
            + (f" (got {shown})" if shown else "")
        )
    if parts.username is not None or parts.password is not None:
        # Never shown: what sits before the '@' may be a password.
        raise BadBaseURL(
            f"{where} must not hold credentials (user:password@): give the API key through"
            " WANDB_API_KEY, a secret or ~/.netrc"
        )
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise BadBaseURL(f"{where} must not have a query or a fragment (?... or #...)")
    if any(not c.isprintable() or c.isspace() for c in text):
        raise BadBaseURL(f"{where} must not contain spaces or control characters")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def _settings(store: Store | None) -> dict[str, str]:
    if store is None:
        own = Store()
        try:
            return {r["key"]: r["value"] for r in SettingsTable(own.db).all("sync.")}
        finally:
            own.close()
    return {r["key"]: r["value"] for r in SettingsTable(store.db).all("sync.")}


def wandb_settings_file() -> tuple[Path, str]:
    """W&B's global settings file and how to name it (wandb/sdk/wandb_setup.py)."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    if config_dir:
        return Path(config_dir).expanduser() / "settings", "$WANDB_CONFIG_DIR/settings"
    return Path("~/.config/wandb/settings").expanduser(), "~/.config/wandb/settings"


def _wandb_settings_base_url() -> tuple[str, str] | None:
    """``base_url`` from W&B's settings file, section ``[default]``; an unreadable file is
    treated as empty, as W&B does (wandb/sdk/lib/settings_file.py ``_try_read``)."""
    import configparser

    path, shown = wandb_settings_file()
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    value = parser.get("default", "base_url", fallback=None)
    return (value, shown) if value and value.strip() else None


def netrc_file() -> tuple[Path, str]:
    """The netrc file W&B reads (wandb/sdk/lib/wbauth/wbnetrc.py ``_get_netrc_file_path``)."""
    if path := os.environ.get("NETRC"):
        return Path(path).expanduser(), f"$NETRC ({path})"
    return Path("~/.netrc").expanduser(), "~/.netrc"


def netrc_key(base_url: str) -> tuple[str, str] | None:
    """The key for ``base_url``'s host (``host:port`` when there is a port) in the netrc
    file, and the file's name; None when there is none (an unreadable file counts as
    none, as in W&B's client)."""
    import netrc

    path, shown = netrc_file()
    host = urlsplit(base_url).netloc
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return None
    if not entry or not entry[2]:
        return None
    return entry[2], shown


def resolve_base_url(
    base_url: str | None = None,
    *,
    store: Store | None = None,
    settings: dict[str, str] | None = None,
) -> tuple[str, str]:
    """The base URL and where it came from."""
    if base_url is not None:
        return normalise_url(base_url, "--base-url"), "--base-url"
    if env := os.environ.get("WANDB_BASE_URL", "").strip():
        return normalise_url(env, "WANDB_BASE_URL"), "WANDB_BASE_URL"
    settings = _settings(store) if settings is None else settings
    if stored := settings.get(BASE_URL_SETTING):
        source = f"launchctl setting {BASE_URL_SETTING}"
        return normalise_url(stored, source), source
    if found := _wandb_settings_base_url():
        return normalise_url(found[0], found[1]), found[1]
    return DEFAULT_BASE_URL, "default"


def resolve(
    base_url: str | None = None, *, store: Store | None = None, need_key: bool = False
) -> Credentials:
    """The credentials to sync with (see the module's docstring for the order).

    A key that is nowhere gives ``api_key=None``; the server refuses to send without
    one, naming the three ways to give it (``wire.NO_KEY_HELP``). ``need_key`` refuses
    here instead. A ``sync.key_secret`` that cannot be read is refused in one line.
    """
    settings = _settings(store)
    url, url_source = resolve_base_url(base_url, settings=settings)
    key: str | None = None
    key_source: str | None = None
    if env_key := os.environ.get("WANDB_API_KEY", "").strip():
        key, key_source = env_key, "WANDB_API_KEY"
    elif secret := settings.get(KEY_SECRET_SETTING):
        from launchctl.secrets import SecretStore

        try:
            key, key_source = SecretStore().get(secret), f"secret {secret}"
        except LaunchctlError as exc:
            raise LaunchctlError(
                f"the W&B API key is the secret the setting {KEY_SECRET_SETTING} names,"
                f" and it cannot be read: {exc}"
            ) from None
    elif found := netrc_key(url):
        key, key_source = found
    if need_key and not key:
        from launchctl.sync.wire import NO_KEY_HELP, Refused

        raise Refused(NO_KEY_HELP)
    return Credentials(url, key, url_source, key_source)
