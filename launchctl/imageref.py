"""Whether a string is an image reference, by Docker's reference grammar.

The grammar (github.com/distribution/reference, regexp.go and normalize.go; docker-py's
``parse_repository_tag`` splits the same way)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]          host: DNS labels joined by ".", or [ipv6]
    path-comp  := [a-z0-9]+ ( separator [a-z0-9]+ )*     separator: "." "_" "__" "-"+
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}   (go-digest: sha256, sha384 or sha512, full length)
    name       <= 255 characters

A name is valid when each of its parts is a path component, or when its first part is a
registry host and the others are path components (as the grammar's regular expression
matches it); path components are lower-case.

The string is split on its separators first and each short piece is matched on its own,
so a long hostile input costs linear time (no regular expression runs on the whole of it).

A base image is written into a Dockerfile's FROM line: a value with a space, a newline
(``ubuntu\\nRUN curl ... | sh``) or ``AS stage`` is not a reference, and is refused here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from launchctl.errors import ConfigError

NAME_MAX = 255  # distribution/reference: NameTotalLengthMax
TAG_MAX = 128
# The longest reference worth matching: name, tag and a sha512 digest with room to spare.
REFERENCE_MAX = NAME_MAX + 1 + TAG_MAX + 1 + 7 + 1 + 128 + 64

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[[A-Fa-f0-9:]+\]")
_PORT = re.compile(r"[0-9]+")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
# Known algorithms and their hex length (distribution/opencontainers digest).
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def _shown(value: str, limit: int = 60) -> str:
    """``value`` quoted on one line (newlines and controls escaped), cut to ``limit``."""
    cut = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(cut, ensure_ascii=False)


def _domain_ok(domain: str) -> bool:
    if domain.startswith("["):
        host, _, rest = domain.partition("]")
        host += "]"
        if not _IPV6.fullmatch(host):
            return False
        if not rest:
            return True
        return rest.startswith(":") and bool(_PORT.fullmatch(rest[1:]))
    host, colon, port = domain.partition(":")
    if colon and not _PORT.fullmatch(port):
        return False
    return all(_DOMAIN_LABEL.fullmatch(label) for label in host.split("."))


def image_ref_problem(value: str) -> str | None:
    """Why ``value`` is not an image reference (a short phrase), or None when it is one."""
    if not value:
        return "is empty"
    if len(value) > REFERENCE_MAX:
        return f"is longer than an image reference may be ({len(value)} characters)"
    if any(c.isspace() for c in value):
        return "holds white space"
    name_tag, at, digest = value.partition("@")
    if at:
        algorithm, sep, hexpart = digest.partition(":")
        if not sep or not _ALGORITHM.fullmatch(algorithm) or not _HEX.fullmatch(hexpart):
            return "has a digest that is not algorithm:hex (32 hex digits or more)"
        want = _DIGEST_HEX.get(algorithm)
        if want is None:  # go-digest: only the registered algorithms parse
            return (
                f"has a digest algorithm {_shown(algorithm)} that is not sha256, sha384 or sha512"
            )
        if len(hexpart) != want:
            return f"has a {algorithm} digest that is not {want} hex digits"
    # A tag follows the last ":" that comes after the last "/" (a port's ":" comes before).
    slash = name_tag.rfind("/")
    colon = name_tag.rfind(":")
    name, tag = name_tag, None
    if colon > slash:
        name, tag = name_tag[:colon], name_tag[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return "has a tag that is not 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    if not name:
        return "has no repository name"
    if len(name) > NAME_MAX:
        return f"has a repository name longer than {NAME_MAX} characters"
    parts = name.split("/")
    first = parts[0]
    if all(_PATH_COMPONENT.fullmatch(part) for part in parts):
        return None  # no registry host: each part a path component (the grammar's reading)
    if len(parts) > 1 and _domain_ok(first):
        parts = parts[1:]  # a registry host, then path components
    elif len(parts) > 1 and _looks_like_host(first):
        return f"has a registry host {_shown(first)} that is not host[:port]"
    for part in parts:
        if not _PATH_COMPONENT.fullmatch(part):
            if part.lower() != part and _PATH_COMPONENT.fullmatch(part.lower()):
                return "has upper-case letters in its repository name"
            return (
                f"has a path component {_shown(part)} that is not lower-case letters and digits"
                " joined by . _ __ or -"
            )
    return None


def _looks_like_host(first: str) -> bool:
    """Docker's ``splitDockerDomain``: the first part names a registry when it holds a "."
    or a ":", is ``localhost``, or has an upper-case letter."""
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


def is_image_ref(value: Any) -> bool:
    """Whether ``value`` is a string that is an image reference."""
    return isinstance(value, str) and image_ref_problem(value) is None


def check_image_ref(value: Any, where: str) -> str:
    """``value`` when it is an image reference; else ConfigError, one line naming ``where``
    (the field, e.g. ``builder.accelerator.base_image``) and why."""
    if not isinstance(value, str):
        raise ConfigError(
            f"{where}: must be an image reference (a string), not {type(value).__name__}"
        )
    problem = image_ref_problem(value)
    if problem is not None:
        raise ConfigError(
            f"{where}: {_shown(value)} is not an image reference ({problem});"
            " write name[:tag][@digest], e.g. ubuntu:22.04"
        )
    return value
