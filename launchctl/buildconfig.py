"""The ``builder`` and ``registry`` sections of queue and agent configs: their checks, their
secret references, and how they are shown.

Credentials (a registry ``password``, a package index URL that holds ``user:token@``) are
written as secret references, ``{"secret": "NAME"}``, as env values are; a queue config that
holds one as plain text is refused when it is written. Stores written before that rule are
still read: ``masked`` hides such a value wherever a config is shown.

``builder.network`` (the network of the build's RUN steps) is the queue admin's or the
agent owner's choice: the engine's default bridge network unless one of them says ``host``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from launchctl.errors import ConfigError

MASK = "***"
# `docker build --network` values a queue may name; bridge and default: the engine's default.
BUILD_NETWORKS = ("bridge", "default", "host", "none")
INDEX_FIELDS = ("index_url", "extra_index_urls", "find_links")
_SECRET_HINT = (
    'store it as a secret (launchctl secret set NAME) and write {"secret": "NAME"} in its place'
)


def _is_ref(value: Any) -> bool:
    from launchctl.secrets import is_secret_ref

    return is_secret_ref(value)


def has_credentials(url: str) -> bool:
    """Whether ``url`` holds a user name or password (``scheme://user:pass@host/...``)."""
    netloc = urlsplit(url if "://" in url else f"//{url}").netloc
    return "@" in netloc


def mask_url(url: str) -> str:
    """``url`` with its ``user:password@`` part replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    host, slash, path = rest.partition("/")
    if "@" not in host:
        return url
    host = f"{MASK}@{host.rpartition('@')[2]}"
    return f"{scheme}{sep}{host}{slash}{path}"


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` to mask in output: its password (raw and decoded), or its user
    name when it has no password (a token given as the user name)."""
    if not has_credentials(url):
        return []
    parts = urlsplit(url if "://" in url else f"//{url}")
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    secret = password if colon and password else user
    return [s for s in dict.fromkeys([secret, unquote(secret)]) if s]


def check_network(value: Any, where: str) -> str | None:
    """``builder.network``: None (the engine's default) or one of BUILD_NETWORKS."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in BUILD_NETWORKS:
        raise ConfigError(
            f"{where}: builder.network must be one of {', '.join(BUILD_NETWORKS)}"
            " (builds use the engine's default bridge network unless it says host)"
        )
    return None if value in ("bridge", "default") else value


def _index_values(builder: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, value) for each package index setting: one for index_url, one per list item."""
    found: list[tuple[str, Any]] = []
    for key in INDEX_FIELDS:
        value = builder.get(key)
        if value is None:
            continue
        if key == "index_url":
            found.append((key, value))
        elif isinstance(value, list):
            found.extend((f"{key}[{i}]", item) for i, item in enumerate(value))
        else:
            found.append((key, value))
    return found


def check_builder(builder: Any, where: str, *, literal_ok: bool = False) -> None:
    """The credential fields and the network of a ``builder`` section.

    ``literal_ok``: a URL with credentials in plain text is accepted (an agent's own config
    file); otherwise (a queue config) it is refused, saying how to refer to a secret.
    Messages never quote a value.
    """
    if not isinstance(builder, dict):
        return  # the caller says what a builder must be
    for key in ("extra_index_urls", "find_links"):
        if key in builder and not isinstance(builder[key], list):
            raise ConfigError(f"{where}: builder.{key} must be a list of URLs")
    for field, value in _index_values(builder):
        if _is_ref(value):
            continue
        if not isinstance(value, str):
            raise ConfigError(
                f'{where}: builder.{field} must be a URL or a secret reference {{"secret": "NAME"}}'
            )
        if has_credentials(value) and not literal_ok:
            raise ConfigError(
                f"{where}: builder.{field} holds a user name or password in plain text;"
                f" {_SECRET_HINT}"
            )
    check_network(builder.get("network"), where)
    check_base_images(builder, where)
    if builder.get("base_refresh") is not None:
        base_refresh_seconds(builder["base_refresh"], where)


# builder.base_refresh (issue 20): how long a base image's registry digest is trusted before
# a build asks its registry again. 12h by default: an air-gapped lab whose bases came from a
# registry it cannot reach pays one failed manifest request per base twice a day, not one per
# run, and a base pushed anew to the lab's own registry is picked up the same day (`always`
# picks it up at once). A base built on this machine is never asked about: its local image ID
# is its identity, so a base rebuilt in place is a new job image whatever this says.
BASE_REFRESH_DEFAULT = "12h"
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def base_refresh_seconds(value: Any, where: str = "the queue's config") -> float:
    """``builder.base_refresh`` in seconds: ``always`` 0, ``never`` infinity, or an age
    (``90s``, ``30m``, ``12h``, ``7d``, ``2w``); None is the default, 12h."""
    if value is None:
        value = BASE_REFRESH_DEFAULT
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "always":
            return 0.0
        if text == "never":
            return float("inf")
        if text[-1:] in _AGE_UNITS and text[:-1].isdigit():
            return float(int(text[:-1]) * _AGE_UNITS[text[-1]])
    raise ConfigError(
        f"{where}: builder.base_refresh must be always, never or an age such as 12h"
        " (a number and s, m, h, d or w)"
    )


# Where a builder section names a base image: the default one, and the accelerator's (W&B's
# ``accelerator`` key, or its older name ``cuda``; wandb/sdk/launch/_project_spec.py).
BASE_IMAGE_FIELDS = (("base_image",), ("accelerator", "base_image"), ("cuda", "base_image"))


def check_base_images(builder: Any, where: str) -> None:
    """Each base image a ``builder`` section names is an image reference (Docker's grammar,
    launchctl.imageref); None or "" means not set, as W&B reads it. The value goes into a
    Dockerfile's FROM line, so a newline, a space or ``AS stage`` is refused here, before
    anything is stored."""
    from launchctl.imageref import check_image_ref

    if not isinstance(builder, dict):
        return
    for path in BASE_IMAGE_FIELDS:
        section: Any = builder
        for key in path[:-1]:
            section = section.get(key)
            if section is None:
                break
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: builder.{key} must be a mapping (base_image: IMAGE)")
        if not isinstance(section, dict):
            continue
        value = section.get(path[-1])
        if value is None or value == "":
            continue
        if isinstance(value, str) and _has_fields(value):
            continue  # a queue's {{template field}}: checked once filled, before the build
        check_image_ref(value, f"{where}: builder.{'.'.join(path)}")


def _has_fields(value: str) -> bool:
    from launchctl.variables import fields

    return bool(fields(value))


def check_registry(registry: Any, where: str, *, literal_ok: bool = False) -> None:
    """``registry``: ``host:port``, or ``{url, username, password}`` whose password is a
    secret reference (plain text only where ``literal_ok``)."""
    if isinstance(registry, str):
        if has_credentials(registry):
            raise ConfigError(
                f"{where}: registry must be host:port, without a user name or password;"
                " give them as username and password"
            )
        return
    if not isinstance(registry, dict):
        return  # the caller says what a registry must be
    for key in ("url", "uri"):
        value = registry.get(key)
        if isinstance(value, str) and has_credentials(value):
            raise ConfigError(
                f"{where}: registry.{key} must not hold a user name or password;"
                " give them as username and password"
            )
    username = registry.get("username")
    if username is not None and not isinstance(username, str) and not _is_ref(username):
        raise ConfigError(f"{where}: registry.username must be a string or a secret reference")
    password = registry.get("password")
    if password is None or password == "" or _is_ref(password):
        return
    if not isinstance(password, str):
        raise ConfigError(
            f'{where}: registry.password must be a secret reference {{"secret": "NAME"}}'
        )
    if not literal_ok:
        raise ConfigError(f"{where}: registry.password is in plain text; {_SECRET_HINT}")


def check_config(config: dict[str, Any], where: str, *, literal_ok: bool = False) -> None:
    """The builder and registry sections of a queue (or, ``literal_ok``, an agent) config."""
    if "builder" in config:
        check_builder(config["builder"], where, literal_ok=literal_ok)
    check_spec_images(config, where)
    if "registry" in config:
        check_registry(config["registry"], where, literal_ok=literal_ok)


def check_spec_images(config: Mapping[str, Any], where: str) -> None:
    """The base images of a queue config or a launch spec: its ``builder`` and each
    ``resource_args.<resource>.builder``. Nothing is stored when this raises."""
    check_base_images(config.get("builder"), where)
    resource_args = config.get("resource_args")
    if isinstance(resource_args, dict):
        for resource, args in resource_args.items():
            if isinstance(args, dict) and "builder" in args:
                check_base_images(args["builder"], f"{where}: resource_args.{resource}")


def masked(config: Any) -> Any:
    """A copy of a queue config with every credential written in plain text (an old store's)
    replaced by ``***``; secret references are shown as they are (they hold only a name)."""
    if not isinstance(config, dict):
        return config
    out = dict(config)
    builder = out.get("builder")
    if isinstance(builder, dict):
        builder = dict(builder)
        for key in INDEX_FIELDS:
            builder[key] = _map_urls(builder.get(key), mask_url)
        out["builder"] = {k: v for k, v in builder.items() if k in config["builder"]}
    registry = out.get("registry")
    if isinstance(registry, str):
        out["registry"] = mask_url(registry)
    elif isinstance(registry, dict):
        registry = dict(registry)
        for key in ("url", "uri"):
            if isinstance(registry.get(key), str):
                registry[key] = mask_url(registry[key])
        if isinstance(registry.get("password"), str) and registry["password"]:
            registry["password"] = MASK
        out["registry"] = registry
    return out


def _map_urls(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [fn(v) if isinstance(v, str) else v for v in value]
    return value


# -- at run start: secret references filled in, and what to mask ---------------------------


def secret_names(builder: Any, registry: Any) -> list[str]:
    """The secrets ``builder`` and ``registry`` refer to, in order, each once."""
    names: list[str] = []
    if isinstance(builder, dict):
        names += [v["secret"] for _, v in _index_values(builder) if _is_ref(v)]
    if isinstance(registry, dict):
        names += [
            registry[k]["secret"] for k in ("username", "password") if _is_ref(registry.get(k))
        ]
    return list(dict.fromkeys(names))


def resolve(builder: Any, registry: Any) -> tuple[Any, Any, list[str]]:
    """``builder`` and ``registry`` with their secret references replaced by the values
    (read from the secret store only when something refers to it), and the values to mask
    in every output: each credential, and each URL that holds one. A missing secret raises
    MissingSecret, naming it."""
    names = secret_names(builder, registry)
    values: dict[str, str] = {}
    if names:
        from launchctl.secrets import SecretStore

        values = SecretStore().get_many(names)
    return fill(builder, registry, values)


def fill(builder: Any, registry: Any, values: Mapping[str, str]) -> tuple[Any, Any, list[str]]:
    """``resolve`` with the secret values given by name (every one ``secret_names`` lists):
    no IO."""
    masks: list[str] = []

    def fill(value: Any) -> Any:
        if _is_ref(value):
            value = values[value["secret"]]
            masks.append(value)
        if isinstance(value, str):
            masks.extend(url_secrets(value))
            if has_credentials(value):
                masks.append(value)
        return value

    if isinstance(builder, dict):
        builder = dict(builder)
        for key in INDEX_FIELDS:
            value = builder.get(key)
            if isinstance(value, list):
                builder[key] = [fill(v) for v in value]
            elif value is not None:
                builder[key] = fill(value)
    if isinstance(registry, dict):
        registry = dict(registry)
        if registry.get("username") is not None:
            registry["username"] = fill(registry["username"])
        password = registry.get("password")
        if password:
            registry["password"] = fill(password)
            masks.append(str(registry["password"]))
    return builder, registry, [m for m in dict.fromkeys(masks) if m]
