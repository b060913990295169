"""Secrets: an owner-only file apart from the database, env references, and output masking."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import select
import stat
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launchctl.errors import LaunchctlError
from launchctl.masking import Masker
from launchctl.secrets import (
    MissingSecret,
    SecretStore,
    UnsafeSecretsFile,
    is_secret_ref,
    resolve_env,
    secret_refs,
)
from tests.conftest import cli, cli_json

VALUE = "sk-live-7f3a9c1e55d04b2b"


def secrets_file(home: Path) -> Path:
    return home / "secrets" / "secrets.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def set_secret(name: str, value: str) -> subprocess.CompletedProcess[str]:
    return cli("secret", "set", name, input=value)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- the CLI ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["secret"], ["secret", "set"], ["secret", "list"], ["secret", "delete"]]
)
def test_every_secret_command_help_shows_an_example(command: list[str]) -> None:
    out = cli(*command, "--help", check=True).stdout
    assert "launchctl " in out.split("Example", 1)[1]


def test_set_from_stdin_then_list_and_delete(home: Path) -> None:
    proc = set_secret("wandb-key", VALUE + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "saved secret wandb-key\n"
    assert set_secret("hf.token_2", "other\n").returncode == 0
    assert SecretStore().get("wandb-key") == VALUE

    assert cli_json("secret", "list") == [{"name": "hf.token_2"}, {"name": "wandb-key"}]
    listing = cli("secret", "list", check=True).stdout.split()
    assert listing == ["NAME", "hf.token_2", "wandb-key"]

    assert cli("secret", "delete", "wandb-key", check=True).stdout == "deleted secret wandb-key\n"
    assert cli_json("secret", "list") == [{"name": "hf.token_2"}]


def test_set_replaces_an_earlier_value() -> None:
    set_secret("k", "old")
    set_secret("k", "new")
    assert SecretStore().get("k") == "new"


def test_only_one_trailing_newline_is_stripped_from_stdin() -> None:
    set_secret("a", "line one\nline two\n\n")
    set_secret("b", "crlf\r\n")
    set_secret("c", "  spaces kept  ")
    store = SecretStore()
    assert store.get("a") == "line one\nline two\n"
    assert store.get("b") == "crlf"
    assert store.get("c") == "  spaces kept  "


def test_secrets_file_is_0600_right_after_the_first_set(home: Path) -> None:
    assert not secrets_file(home).exists()
    set_secret("k", VALUE)
    assert mode(secrets_file(home)) == 0o600
    assert secrets_file(home).stat().st_uid == os.geteuid()
    # Only the file and its lock, in a 0700 folder: no temp file is left behind, nothing
    # in the database.
    assert sorted(p.name for p in home.iterdir()) == ["secrets"]
    assert mode(secrets_file(home).parent) == 0o700
    assert sorted(p.name for p in secrets_file(home).parent.iterdir()) == [
        ".secrets.lock",
        "secrets.json",
    ]


def test_prompt_on_a_terminal_does_not_echo_the_value(home: Path) -> None:
    """On a terminal the value is read by getpass: the terminal never shows it."""
    master, slave = os.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "secret", "set", "tty-key"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    seen = b""
    try:
        seen += read_until(master, b"not echoed", timeout=30)
        os.write(master, VALUE.encode() + b"\n")
        seen += read_until(master, b"saved secret tty-key", timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert VALUE.encode() not in seen
    assert SecretStore().get("tty-key") == VALUE


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} on the terminal; saw {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {marker!r}; saw {data!r}")
            data += chunk
    return data


def test_a_value_never_appears_in_any_output(home: Path) -> None:
    outputs = [
        set_secret("k", VALUE),
        cli("secret", "list"),
        cli("secret", "list", "--json"),
        cli("secret", "set", "bad name", input=VALUE),
        cli("secret", "set", "k2", input=VALUE + "\0"),
        cli("secret", "delete", "missing"),
    ]
    secrets_file(home).chmod(0o644)
    outputs += [cli("secret", "list"), set_secret("k3", VALUE)]
    secrets_file(home).chmod(0o600)
    secrets_file(home).write_text('{"secrets": {"k": "' + VALUE)  # corrupt: cut short
    outputs.append(cli("secret", "list"))
    for proc in outputs:
        assert VALUE not in proc.stdout + proc.stderr, proc.args
    assert [p.returncode for p in outputs] == [0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_a_group_readable_secrets_file_is_refused_in_one_line(home: Path) -> None:
    set_secret("k", VALUE)
    path = secrets_file(home)
    path.chmod(0o640)
    before = path.read_bytes()
    for proc in (cli("secret", "list"), set_secret("other", "x"), cli("secret", "delete", "k")):
        assert proc.returncode == 1
        line = one_line(proc.stderr)
        assert line.startswith("launchctl: error: ")
        assert f"chmod 600 {path}" in line and "0640" in line
    assert path.read_bytes() == before  # nothing rewritten, mode left for the user to fix
    path.chmod(0o600)
    assert cli_json("secret", "list") == [{"name": "k"}]


@pytest.mark.parametrize("bad_mode", [0o604, 0o620, 0o660, 0o644, 0o666])
def test_any_access_for_group_or_others_is_refused(home: Path, bad_mode: int) -> None:
    SecretStore().set("k", VALUE)
    secrets_file(home).chmod(bad_mode)
    with pytest.raises(UnsafeSecretsFile, match="chmod 600"):
        SecretStore().get("k")


def test_a_stricter_mode_is_accepted(home: Path) -> None:
    SecretStore().set("k", VALUE)
    secrets_file(home).chmod(0o400)
    assert SecretStore().get("k") == VALUE


def test_a_file_owned_by_another_uid_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SecretStore().set("k", VALUE)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(secrets_file(home)).st_uid + 1)
    with pytest.raises(UnsafeSecretsFile, match="belongs to uid") as info:
        SecretStore().names()
    assert VALUE not in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_cli_refuses_a_file_that_another_user_owns(home: Path) -> None:
    set_secret("k", VALUE)
    os.chown(secrets_file(home), 65534, -1)
    proc = cli("secret", "list")
    assert proc.returncode == 1
    assert "belongs to uid 65534" in one_line(proc.stderr)


def test_a_symlinked_secrets_file_is_refused(home: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    SecretStore(real).set("k", VALUE)
    secrets_file(home).parent.mkdir(parents=True, mode=0o700)
    secrets_file(home).symlink_to(real)
    with pytest.raises(UnsafeSecretsFile, match="symbolic link"):
        SecretStore().get("k")


def test_a_corrupt_file_is_reported_without_its_content(home: Path) -> None:
    secrets_file(home).parent.mkdir(parents=True, mode=0o700)
    fd = os.open(secrets_file(home), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"secrets": {"k": "' + VALUE.encode())
    os.close(fd)
    proc = cli("secret", "list")
    assert proc.returncode == 1
    assert "is corrupt" in one_line(proc.stderr) and VALUE not in proc.stderr


def test_the_file_is_exactly_0600_whatever_the_umask(home: Path) -> None:
    for umask in (0o000, 0o277):
        old = os.umask(umask)
        try:
            SecretStore().set(f"k{umask}", VALUE)
        finally:
            os.umask(old)
        assert mode(secrets_file(home)) == 0o600


def test_concurrent_sets_all_survive(home: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "launchctl", "secret", "set", f"s{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for i in range(8)
    ]
    for i, proc in enumerate(procs):
        proc.communicate(f"value-{i}", timeout=60)
        assert proc.returncode == 0
    assert SecretStore().names() == [f"s{i}" for i in range(8)]


# -- the store ------------------------------------------------------------------


def test_missing_secret_names_the_secret() -> None:
    store = SecretStore()
    store.set("present", VALUE)
    with pytest.raises(MissingSecret, match="'wandb-key' is not set") as info:
        store.get("wandb-key")
    assert info.value.names == ["wandb-key"]
    with pytest.raises(MissingSecret, match="'wandb-key'"):
        store.delete("wandb-key")
    proc = cli("secret", "delete", "wandb-key")
    assert proc.returncode == 1
    assert "secret 'wandb-key' is not set" in one_line(proc.stderr)


def test_no_file_means_no_secrets(home: Path) -> None:
    assert SecretStore().names() == []
    assert not home.exists()  # reading creates nothing


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "a/b", "ä", "a\n", "../k", "$k"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(LaunchctlError, match="invalid secret name"):
        SecretStore().set(name, VALUE)
    with pytest.raises(LaunchctlError, match="invalid secret name"):
        SecretStore().get(name)


@pytest.mark.parametrize("name", ["a", "x" * 64, "wandb-key", "HF.token_2", "0"])
def test_valid_names_are_accepted(name: str) -> None:
    SecretStore().set(name, VALUE)
    assert SecretStore().get(name) == VALUE


def test_empty_value_is_refused_and_nothing_written(home: Path) -> None:
    with pytest.raises(LaunchctlError, match="cannot be empty"):
        SecretStore().set("k", "")
    proc = set_secret("k", "\n")
    assert proc.returncode == 1 and "cannot be empty" in one_line(proc.stderr)
    assert not secrets_file(home).exists()


def test_repr_and_errors_hold_no_value() -> None:
    store = SecretStore()
    store.set("k", VALUE)
    assert VALUE not in repr(store)
    assert VALUE not in repr(Masker([VALUE]))
    with pytest.raises(LaunchctlError) as info:
        store.set("k", VALUE + "\0")
    assert VALUE not in str(info.value)


# -- env references -------------------------------------------------------------


def test_resolve_env_fills_in_secrets_and_returns_their_values() -> None:
    store = SecretStore()
    store.set("wandb-key", VALUE)
    store.set("hf", "hf-token")
    env = {
        "WANDB_API_KEY": {"secret": "wandb-key"},
        "ALSO_WANDB": {"secret": "wandb-key"},
        "HF_TOKEN": {"secret": "hf"},
        "THREADS": 2,
        "FLAG": True,
        "PLAIN": "x",
    }
    resolved, used = resolve_env(env, store)
    assert resolved == {
        "WANDB_API_KEY": VALUE,
        "ALSO_WANDB": VALUE,
        "HF_TOKEN": "hf-token",
        "THREADS": "2",
        "FLAG": "True",
        "PLAIN": "x",
    }
    assert used == [VALUE, "hf-token"]
    assert secret_refs(env) == ["wandb-key", "hf"]


def test_resolve_env_names_every_missing_secret() -> None:
    store = SecretStore()
    store.set("present", VALUE)
    env = {"A": {"secret": "gone"}, "B": {"secret": "present"}, "C": {"secret": "also-gone"}}
    with pytest.raises(MissingSecret) as info:
        resolve_env(env, store)
    assert info.value.names == ["gone", "also-gone"]
    assert "'gone'" in str(info.value) and "'also-gone'" in str(info.value)
    assert VALUE not in str(info.value)


def test_resolve_env_without_references_never_reads_the_store(home: Path) -> None:
    SecretStore().set("k", VALUE)
    secrets_file(home).chmod(0o644)  # unreadable by the rules, but nobody asks for it
    assert resolve_env({"A": 1}) == ({"A": "1"}, [])
    with pytest.raises(UnsafeSecretsFile):
        resolve_env({"A": {"secret": "k"}})


@pytest.mark.parametrize(
    "ref",
    [
        {},
        {"secret": 3},
        {"secret": "k", "default": VALUE},
        {"value": VALUE},
        {"name": "k"},
        {"secret": "not a name"},
        {"secret": VALUE + " "},
    ],
)
def test_malformed_references_are_refused_naming_the_key_only(ref: dict) -> None:
    assert not is_secret_ref(ref)
    for call in (lambda: resolve_env({"API_KEY": ref}), lambda: secret_refs({"API_KEY": ref})):
        with pytest.raises(LaunchctlError, match="env API_KEY") as info:
            call()
        assert VALUE not in str(info.value)


def test_is_secret_ref() -> None:
    assert is_secret_ref({"secret": "wandb-key"})
    assert not is_secret_ref("wandb-key")
    assert not is_secret_ref(["secret", "k"])
    assert not is_secret_ref(None)


# -- masking --------------------------------------------------------------------


def reference_mask(data: bytes, values: list[bytes]) -> bytes:
    """The defined semantics: left to right, the longest value starting here becomes ***."""
    out = bytearray()
    i = 0
    while i < len(data):
        hits = [v for v in values if v and data.startswith(v, i)]
        if hits:
            out += b"***"
            i += len(max(hits, key=len))
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def stream(masker: Masker, data: bytes, cuts: list[int]) -> bytes:
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    out = b"".join(masker.feed(data[a:b]) for a, b in itertools.pairwise(edges))
    return out + masker.flush()


# A small alphabet so values overlap, prefix each other and straddle chunk edges; 'é' and
# '😀' are multi-byte in UTF-8. No '*': a value made of '*' could not vanish behind '***'.
ALPHABET = "abé😀"
values_st = st.lists(st.text(ALPHABET, min_size=1, max_size=6), min_size=1, max_size=4)


@st.composite
def text_with_values(draw: st.DrawFn, alphabet: str = ALPHABET) -> tuple[list[str], str]:
    values = draw(st.lists(st.text(alphabet, min_size=1, max_size=6), min_size=1, max_size=4))
    parts = draw(st.lists(st.one_of(st.text(alphabet, max_size=5), st.sampled_from(values))))
    return values, "".join(parts)


cuts_st = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@settings(max_examples=400)
@given(text_with_values(), cuts_st)
def test_masked_stream_matches_the_defined_semantics_for_any_chunking(
    case: tuple[list[str], str], cuts: list[int]
) -> None:
    values, text = case
    data = text.encode()
    out = stream(Masker(values), data, cuts)
    assert out == reference_mask(data, [v.encode() for v in values])
    for value in values:
        assert value.encode() not in out


@settings(max_examples=300)
@given(text_with_values(), cuts_st)
def test_one_value_is_masked_like_str_replace(case: tuple[list[str], str], cuts: list[int]) -> None:
    values, text = case
    value = values[0]
    assert stream(Masker([value]), text.encode(), cuts) == text.replace(value, "***").encode()


@settings(max_examples=200)
@given(text_with_values("ab*"), cuts_st)
def test_values_holding_the_mask_character_follow_the_same_semantics(
    case: tuple[list[str], str], cuts: list[int]
) -> None:
    values, text = case
    data = text.encode()
    assert stream(Masker(values), data, cuts) == reference_mask(data, [v.encode() for v in values])


@given(values_st, st.lists(st.binary(max_size=20), max_size=10))
def test_at_most_longest_minus_one_bytes_are_held_back(
    values: list[str], chunks: list[bytes]
) -> None:
    """With nothing to mask, everything but the last len(longest)-1 bytes comes out at once."""
    longest = max(len(v.encode()) for v in values)
    masker = Masker(values)
    fed = out = 0
    for chunk in chunks:
        chunk = bytes(c for c in chunk if c < 0x80 and c not in b"ab")  # never in a value
        fed += len(chunk)
        out += len(masker.feed(chunk))
        assert fed - out <= longest - 1
    assert out + len(masker.flush()) == fed


def test_short_values_are_still_masked() -> None:
    assert Masker(["ab", "x"]).mask(b"xx ab abc") == b"****** *** ***c"


def test_no_values_pass_output_through_without_holding_back() -> None:
    masker = Masker([])
    assert masker.feed(b"hello ") == b"hello "
    assert masker.feed(b"world") == b"world"
    assert masker.flush() == b""
    assert Masker([""]).feed(b"abc") == b"abc"


def test_a_secret_split_across_chunks_is_masked() -> None:
    masker = Masker([VALUE])
    data = f"key={VALUE}\n".encode()
    out = b"".join(masker.feed(data[i : i + 1]) for i in range(len(data))) + masker.flush()
    assert out == b"key=***\n"


def test_longest_value_wins_where_values_overlap() -> None:
    assert Masker(["abc", "abcdef"]).mask(b"abcdefg abcx") == b"***g ***x"
    masker = Masker(["abc", "abcdef"])
    assert masker.feed(b"xabc") + masker.feed(b"def") + masker.flush() == b"x***"


def test_mask_text_masks_a_message() -> None:
    masker = Masker([VALUE, "é😀"])
    assert masker.mask_text(f"bad key {VALUE} é😀!") == "bad key *** ***!"
    assert json.dumps(masker.mask_text(VALUE)) == '"***"'
