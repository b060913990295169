"""Secrets: named values in one owner-only file beside the database, never inside it.

The file is ``$LAUNCHCTL_HOME/secrets/secrets.json``: mode 0600 in a 0700 folder (whatever
``LAUNCHCTL_UMASK`` says), owned by the OS user who runs the agent. A store made before
that kept it at ``$LAUNCHCTL_HOME/secrets.json``; it is moved into the folder the first
time it is used. It is written atomically (a 0600 temp file, fsync, rename) and is refused
when anyone else could read or write it. Queues refer to secrets by name in ``env``
(``{"WANDB_API_KEY": {"secret": "wandb-key"}}``); at run start the agent reads the values
its queue names (``secret_refs``, ``SecretStore.get_many``) and puts them in the run's env,
and ``launchctl.masking.Masker`` replaces them with ``***`` in what the run prints.

No value is ever put in an exception message, a repr or a log line here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import LaunchctlError, NotFound

FILE_NAME = "secrets.json"
LOCK_NAME = ".secrets.lock"
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FORMAT_VERSION = 1


class MissingSecret(NotFound):
    """A secret that is referenced or asked for but not set; names it, never a value."""

    def __init__(self, names: str | Sequence[str]) -> None:
        self.names = [names] if isinstance(names, str) else list(names)
        if len(self.names) == 1:
            name = self.names[0]
            message = f"secret {name!r} is not set (set it with: launchctl secret set {name})"
        else:
            quoted = ", ".join(repr(n) for n in self.names)
            message = f"secrets {quoted} are not set (set each with: launchctl secret set NAME)"
        super().__init__(message)


class UnsafeSecretsFile(LaunchctlError):
    """A secrets file that others could read or change, or that is not what it should be."""


def check_name(name: str) -> str:
    """A secret name: letters, digits, '.', '_' and '-', 1 to 64 of them."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LaunchctlError(
            f"invalid secret name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def _check_value(value: str) -> str:
    if not isinstance(value, str):
        raise LaunchctlError("a secret value must be a string")
    if value == "":
        raise LaunchctlError("a secret value cannot be empty")
    if "\0" in value:
        raise LaunchctlError("a secret value cannot contain a NUL character")
    return value


class SecretStore:
    """Named secret values in one JSON file that only its owner may read."""

    def __init__(self, path: Path | None = None) -> None:
        self._legacy: Path | None = None
        self._folder_mode: int | None = None  # the default folder is always 0700
        if path is None:
            from launchctl.paths import home, secrets_dir

            root = home()
            path = secrets_dir(root) / FILE_NAME
            self._legacy = root / FILE_NAME  # where stores before the folder kept it
            self._folder_mode = 0o700
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    # -- public API ---------------------------------------------------------

    def get(self, name: str) -> str:
        """The value of ``name``; ``MissingSecret`` when it is not set."""
        values = self._read(check_name(name))
        if name not in values:
            raise MissingSecret(name)
        return values[name]

    def get_many(self, names: Sequence[str]) -> dict[str, str]:
        """Several values from one read of the file; ``MissingSecret`` names every missing one."""
        values = self._read(*names)
        missing = [n for n in dict.fromkeys(names) if n not in values]
        if missing:
            raise MissingSecret(missing)
        return {n: values[n] for n in names}

    def names(self) -> list[str]:
        """The names of the stored secrets, sorted."""
        return sorted(self._read())

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing any earlier value."""
        check_name(name)
        _check_value(value)
        with self._locked():
            values = self._read()
            values[name] = value
            self._write(values)

    def delete(self, name: str) -> None:
        """Remove ``name``; ``MissingSecret`` when it is not set."""
        check_name(name)
        with self._locked():
            values = self._read()
            if name not in values:
                raise MissingSecret(name)
            del values[name]
            self._write(values)

    # -- the file -----------------------------------------------------------

    def _move_legacy(self) -> None:
        """Move a secrets file from where older stores kept it into the secrets folder.

        Only a file that passes the checks moves; anything else (a symbolic link, a file
        open to others) stays where it is and is read there, so its error names it. Where
        the home cannot be written, the file is read where it is.
        """
        legacy = self._legacy
        if legacy is None or not os.path.lexists(legacy) or os.path.lexists(self.path):
            return
        try:
            self._check_safe(os.lstat(legacy))  # a symbolic link is not a regular file
            with self._locked(migrating=True):
                if os.path.lexists(legacy) and not os.path.lexists(self.path):
                    os.rename(legacy, self.path)
        except (LaunchctlError, OSError):
            self.path, self._legacy, self._folder_mode = legacy, None, None
            return
        with contextlib.suppress(OSError):
            os.unlink(legacy.parent / LOCK_NAME)
        self._legacy = None

    def _make_folder(self) -> None:
        """The secrets folder: 0700, whatever the umask (the home may be shared with a group)."""
        from launchctl.paths import make_dir

        if self._folder_mode is not None:
            make_dir(self.path.parent.parent)  # the home, as the store makes it
            make_dir(self.path.parent, self._folder_mode)
            self._check_folder()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _check_folder(self) -> None:
        """The secrets folder is a real folder of the owner's, closed to everyone else."""
        folder = self.path.parent
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeSecretsFile(f"secrets folder {folder} is not a folder (a link?)")
        uid = os.geteuid()
        if st.st_uid != uid:
            raise UnsafeSecretsFile(
                f"secrets folder {folder} belongs to uid {st.st_uid}, not to you (uid {uid})"
            )
        if st.st_mode & 0o077:
            raise UnsafeSecretsFile(
                f"secrets folder {folder} is open to others (mode {stat.S_IMODE(st.st_mode):04o});"
                f" run: chmod 700 {folder}"
            )

    @contextlib.contextmanager
    def _locked(self, *, migrating: bool = False) -> Iterator[None]:
        """Serialize read-modify-write across processes (the file itself is replaced)."""
        if not migrating:
            self._move_legacy()
        try:
            self._make_folder()
            lock = self.path.parent / LOCK_NAME
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._cannot_write(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, *names: str) -> dict[str, str]:
        """The stored values, after checking ``names`` and the open file's owner and mode."""
        for name in names:
            check_name(name)
        self._move_legacy()
        if self._folder_mode is not None:
            self._check_folder()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeSecretsFile(
                    f"secrets file {self.path} is a symbolic link; replace it with the file itself"
                ) from None
            raise LaunchctlError(f"cannot read secrets file {self.path}: {exc.strerror}") from None
        try:  # before fdopen, which refuses a folder with an IsADirectoryError
            self._check_safe(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        return self._parse(raw)

    def _check_safe(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeSecretsFile(f"secrets file {self.path} is not a regular file")
        uid = os.geteuid()
        if st.st_uid != uid:
            raise UnsafeSecretsFile(
                f"secrets file {self.path} belongs to uid {st.st_uid}, not to you (uid {uid}):"
                " secrets are read only by the user who owns them and runs the agent"
            )
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise UnsafeSecretsFile(
                f"secrets file {self.path} is open to other users (mode {mode:04o});"
                f" run: chmod 600 {self.path}"
            )

    def _parse(self, raw: bytes) -> dict[str, str]:
        corrupt = f"secrets file {self.path} is corrupt"
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UnsafeSecretsFile(f"{corrupt} (not UTF-8)") from None
        except json.JSONDecodeError as exc:  # its message holds a position, not the text
            raise UnsafeSecretsFile(
                f"{corrupt} (not JSON: {exc.msg} at line {exc.lineno})"
            ) from None
        values = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise UnsafeSecretsFile(f'{corrupt} (expected {{"secrets": {{NAME: VALUE}}}})')
        return values

    def _write(self, values: dict[str, str]) -> None:
        """Replace the file atomically; the new content is never readable by others."""
        folder = self.path.parent
        data = json.dumps({"version": _FORMAT_VERSION, "secrets": values}, indent=2, sort_keys=True)
        tmp = folder / f".{FILE_NAME}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._cannot_write(exc) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)  # exactly 0600 whatever the umask
                fh.write((data + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise self._cannot_write(exc) from None
            raise
        with contextlib.suppress(OSError):  # the rename is done; this only makes it durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _cannot_write(self, exc: OSError) -> LaunchctlError:
        return LaunchctlError(f"cannot write secrets file {self.path}: {exc.strerror or exc}")


# -- references in env ------------------------------------------------------


def is_secret_ref(value: Any) -> bool:
    """Whether ``value`` is a well-formed reference: ``{"secret": "NAME"}``, NAME valid."""
    return (
        isinstance(value, dict)
        and list(value) == ["secret"]
        and isinstance(value["secret"], str)
        and NAME_RE.fullmatch(value["secret"]) is not None
    )


def _ref_name(key: str, value: Any) -> str | None:
    """The secret named by ``env[key]``, None for a plain value; malformed -> LaunchctlError.

    The errors name the env key, never what the reference holds: a malformed reference
    may be a value pasted in by mistake.
    """
    if not isinstance(value, dict):
        return None
    if list(value) != ["secret"] or not isinstance(value["secret"], str):
        raise LaunchctlError(
            f'env {key}: a secret reference is {{"secret": "NAME"}} and nothing else'
            f" (got keys: {', '.join(map(str, value)) or 'none'})"
        )
    if not NAME_RE.fullmatch(value["secret"]):
        raise LaunchctlError(
            f"env {key}: the secret name is not valid (use 1-64 letters, digits, '.', '_' or '-')"
        )
    return str(value["secret"])


def secret_refs(env: Mapping[str, Any]) -> list[str]:
    """The secret names ``env`` refers to, in order, each once; malformed -> LaunchctlError."""
    names = (_ref_name(str(k), v) for k, v in env.items())
    return list(dict.fromkeys(n for n in names if n is not None))


def resolve_env(
    env: Mapping[str, Any], store: SecretStore | None = None
) -> tuple[dict[str, str], list[str]]:
    """``env`` with secret references filled in, and the secret values used (to mask).

    Plain values are ``str()``'d. The store is read only when something refers to it, so a
    queue without secrets never trips over the secrets file.
    """
    names = secret_refs(env)
    if not names:
        return {str(k): str(v) for k, v in env.items()}, []
    values = (store or SecretStore()).get_many(names)
    resolved: dict[str, str] = {}
    for key, value in env.items():
        name = _ref_name(str(key), value)
        resolved[str(key)] = values[name] if name is not None else str(value)
    return resolved, list(dict.fromkeys(values[n] for n in names))
