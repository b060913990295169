"""In-process tests of launchctl.secrets that kill what `nox -s mutate` found surviving
(issue 19): the file's folder and format, the move from where older stores kept it, and
the exact words of each refusal. tests/test_secrets.py drives most of this through the
CLI, in a subprocess, where a mutant is never imported.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from launchctl import secrets
from launchctl.errors import LaunchctlError
from launchctl.secrets import (
    LOCK_NAME,
    MissingSecret,
    SecretStore,
    UnsafeSecretsFile,
    resolve_env,
    secret_refs,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_each_bad_value_is_refused_in_its_own_words(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json")
    for value, words in (
        (3, "a secret value must be a string"),
        ("", "a secret value cannot be empty"),
        ("a\0b", "a secret value cannot contain a NUL character"),
    ):
        with pytest.raises(LaunchctlError) as err:
            store.set("k", value)  # type: ignore[arg-type]
        assert str(err.value) == words
    assert not (tmp_path / "s.json").exists()


def test_missing_secrets_are_named_together() -> None:
    assert str(MissingSecret(["a", "b"])) == (
        "secrets 'a', 'b' are not set (set each with: launchctl secret set NAME)"
    )


def test_the_default_file_is_in_a_0700_folder_of_the_home_whatever_the_umask(
    home: Path,
) -> None:
    store = SecretStore()
    assert store.path == home / "secrets" / "secrets.json"
    assert repr(store) == f"SecretStore({str(home / 'secrets' / 'secrets.json')!r})"
    old = os.umask(0o002)
    try:
        store.set("a", "1")
    finally:
        os.umask(old)
    assert mode_of(home / "secrets") == 0o700 and mode_of(store.path) == 0o600
    assert SecretStore().get("a") == "1"


def test_the_folder_is_0700_even_with_a_shared_umask(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHCTL_UMASK", "007")  # the home's folders are 0770...
    SecretStore().set("a", "1")
    assert mode_of(home / "secrets") == 0o700  # ... the secrets folder is not


def test_a_given_path_gets_its_folders(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "a" / "b" / "s.json")
    store.set("k", "v")
    assert store.get("k") == "v"


def test_the_file_is_written_sorted_indented_and_versioned(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json")
    store.set("b", "2")
    store.set("a", "1")
    text = (tmp_path / "s.json").read_text()
    assert text == '{\n  "secrets": {\n    "a": "1",\n    "b": "2"\n  },\n  "version": 1\n}\n'
    store.delete("b")
    assert store.names() == ["a"] and json.loads((tmp_path / "s.json").read_text()) == {
        "secrets": {"a": "1"},
        "version": 1,
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_file_from_before_the_folder_is_moved_into_it(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    legacy = home / "secrets.json"
    legacy.write_text(json.dumps({"version": 1, "secrets": {"old": "v"}}))
    legacy.chmod(0o600)
    (home / LOCK_NAME).write_text("")
    store = SecretStore()
    assert store.get("old") == "v"
    assert not legacy.exists() and not (home / LOCK_NAME).exists()
    assert (home / "secrets" / "secrets.json").is_file()
    store.set("new", "w")
    assert SecretStore().names() == ["new", "old"] and not legacy.exists()


def test_a_legacy_file_beside_a_new_one_is_left_alone(home: Path) -> None:
    SecretStore().set("new", "1")
    legacy = home / "secrets.json"
    legacy.write_text(json.dumps({"version": 1, "secrets": {"old": "v"}}))
    legacy.chmod(0o600)
    assert SecretStore().names() == ["new"] and legacy.exists()


def test_an_unsafe_legacy_file_stays_and_is_refused_where_it_is(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    legacy = home / "secrets.json"
    legacy.write_text(json.dumps({"version": 1, "secrets": {"old": "v"}}))
    legacy.chmod(0o644)
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore().names()
    assert str(err.value) == (
        f"secrets file {legacy} is open to other users (mode 0644); run: chmod 600 {legacy}"
    )
    assert legacy.exists() and not (home / "secrets" / "secrets.json").exists()


def test_an_open_or_linked_folder_is_refused_in_words(home: Path, tmp_path: Path) -> None:
    SecretStore().set("a", "1")
    folder = home / "secrets"
    folder.chmod(0o750)
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore().get("a")
    assert str(err.value) == (
        f"secrets folder {folder} is open to others (mode 0750); run: chmod 700 {folder}"
    )
    folder.chmod(0o700)
    folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore().get("a")
    assert str(err.value) == f"secrets folder {folder} is not a folder (a link?)"


def test_a_file_that_is_no_regular_file_or_unreadable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore(tmp_path / "dir.json").names()
    assert str(err.value) == f"secrets file {tmp_path / 'dir.json'} is not a regular file"
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "s.json"
    with pytest.raises(LaunchctlError) as err:
        SecretStore(under_a_file).names()
    assert str(err.value) == f"cannot read secrets file {under_a_file}: Not a directory"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff", "not UTF-8"),
        (b'{"secrets": {}', "not JSON: Expecting ',' delimiter at line 1"),
        (b"[]", 'expected {"secrets": {NAME: VALUE}}'),
        (b'{"secrets": []}', 'expected {"secrets": {NAME: VALUE}}'),
        (b'{"secrets": {"a": 1}}', 'expected {"secrets": {NAME: VALUE}}'),
        (b'{"secrets": {"a": "1", "b": null}}', 'expected {"secrets": {NAME: VALUE}}'),
    ],
)
def test_a_corrupt_file_says_how(tmp_path: Path, raw: bytes, why: str) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(raw)
    path.chmod(0o600)
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore(path).names()
    assert str(err.value) == f"secrets file {path} is corrupt ({why})"


def test_a_write_that_fails_says_so_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = tmp_path / "s"
    store = SecretStore(tmp_path / "s.json")
    store.set("a", "1")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(secrets.os, "fsync", full)
    with pytest.raises(LaunchctlError) as err:
        store.set("b", "2")
    assert str(err.value) == (
        f"cannot write secrets file {tmp_path / 's.json'}: No space left on device"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "s.json"]
    monkeypatch.undo()
    assert store.names() == ["a"]

    real_open = os.open

    def no_temp(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, mode)

    monkeypatch.setattr(secrets.os, "open", no_temp)
    with pytest.raises(LaunchctlError) as err:
        store.set("b", "2")
    assert str(err.value) == (
        f"cannot write secrets file {tmp_path / 's.json'}: Read-only file system"
    )


def test_a_malformed_reference_names_the_keys_it_holds() -> None:
    for env, keys in (({}, "none"), ({"secret": "a", "x": 1}, "secret, x")):
        with pytest.raises(LaunchctlError) as err:
            secret_refs({"K": env})
        assert str(err.value) == (
            f'env K: a secret reference is {{"secret": "NAME"}} and nothing else (got keys: {keys})'
        )


def test_resolve_env_keeps_plain_values_beside_secrets(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json")
    store.set("k", "v")
    env, used = resolve_env({"A": {"secret": "k"}, "B": 2, "C": {"secret": "k"}}, store)
    assert env == {"A": "v", "B": "2", "C": "v"} and used == ["v"]


def test_a_legacy_file_with_no_lock_beside_it_moves_too(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    legacy = home / "secrets.json"
    legacy.write_text(json.dumps({"version": 1, "secrets": {"old": "v"}}))
    legacy.chmod(0o600)
    assert SecretStore().names() == ["old"] and not legacy.exists()


def test_a_file_of_another_uid_is_refused_naming_both_uids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    SecretStore(path).set("k", "v")
    owner = os.stat(path).st_uid
    monkeypatch.setattr(secrets.os, "geteuid", lambda: owner + 1)
    with pytest.raises(UnsafeSecretsFile) as err:
        SecretStore(path).names()
    assert str(err.value) == (
        f"secrets file {path} belongs to uid {owner}, not to you (uid {owner + 1}):"
        " secrets are read only by the user who owns them and runs the agent"
    )


def test_a_folder_that_cannot_be_synced_after_the_rename_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the folder's, after the rename: only for durability
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_fsync(fd)

    monkeypatch.setattr(secrets.os, "fsync", fsync)
    store = SecretStore(tmp_path / "s" / "s.json")
    store.set("a", "1")
    assert len(calls) == 2 and store.get("a") == "1"
