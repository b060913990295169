"""`launchctl secret ...`: set, list and delete the secrets that queues inject into runs."""

from __future__ import annotations

import sys

import typer

from launchctl.cli.common import JSON_OPTION
from launchctl.cli.output import emit_json, table

app = typer.Typer(
    help="Set, list and delete secrets: values a queue's env refers to by name,"
    ' e.g. {"WANDB_API_KEY": {"secret": "wandb-key"}}. They live in'
    " $LAUNCHCTL_HOME/secrets.json (mode 0600, apart from the database) and are never"
    " printed.\n\n\b\nExample:\n"
    "  launchctl secret set wandb-key < key.txt",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _read_value(name: str) -> str:
    """The value from a prompt without echo on a terminal, else all of stdin."""
    from launchctl.errors import LaunchctlError

    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"value for secret {name} (not echoed): ")
    try:
        value = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:  # its message would quote a byte of the value
        raise LaunchctlError("the value on stdin is not UTF-8 text") from None
    # One trailing newline is how `echo` and editors end a line, not part of the value.
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


@app.command("set")
def set_(
    name: str = typer.Argument(..., help="Secret name: letters, digits, '.', '_', '-'."),
) -> None:
    """Store a secret, read from a prompt that does not echo, or from stdin.

    \b
    Example:
      launchctl secret set wandb-key
      printf '%s' "$WANDB_API_KEY" | launchctl secret set wandb-key
    """
    from launchctl.secrets import SecretStore, check_name

    check_name(name)  # before the user types a value for a name that cannot be stored
    SecretStore().set(name, _read_value(name))
    print(f"saved secret {name}")


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List the names of the stored secrets (never their values).

    \b
    Example:
      launchctl secret list --json
    """
    from launchctl.secrets import SecretStore

    names = SecretStore().names()
    if as_json:
        emit_json([{"name": n} for n in names])
        return
    table(([n] for n in names), ["name"])


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Secret name.")) -> None:
    """Delete a secret; runs that refer to it will fail at the agent stage, naming it.

    \b
    Example:
      launchctl secret delete wandb-key
    """
    from launchctl.secrets import SecretStore

    SecretStore().delete(name)
    print(f"deleted secret {name}")
