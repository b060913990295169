"""`launchctl sync config`: the store's sync settings, and which server and key a sync uses.

The command function is registered by ``launchctl/cli/sync.py`` (the ``sync`` group).
"""

from __future__ import annotations

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, line, table


def config(
    base_url: str = typer.Option(
        None, "--base-url", metavar="URL", help="Store the W&B server's URL (sync.base_url)."
    ),
    entity: str = typer.Option(
        None, "--entity", metavar="ENTITY", help="Store the W&B entity to sync to (sync.entity)."
    ),
    project: str = typer.Option(
        None,
        "--project",
        metavar="PROJECT",
        help="Store the W&B project to sync to (sync.project).",
    ),
    key_secret: str = typer.Option(
        None,
        "--key-secret",
        metavar="NAME",
        help="Store the name of the launchctl secret that holds the API key (sync.key_secret);"
        " the key itself stays in the secret.",
    ),
    unset: list[str] = typer.Option(
        [],
        "--unset",
        metavar="KEY",
        help="Remove a setting (base_url, entity, project, key_secret); repeatable.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show or change the sync settings, and which server and API key a sync would use.

    With no option it shows the settings, the base URL a sync uses and where it comes
    from (--base-url, WANDB_BASE_URL, sync.base_url, W&B's settings file, the default),
    and whether an API key is found and where (WANDB_API_KEY, the sync.key_secret
    secret, ~/.netrc): never the key. Only an admin of the store's own entity may change
    the settings, which every user of the store shares.

    \b
    Example:
      launchctl secret set wandb-key
      launchctl sync config --base-url http://wandb.lab:8080 --key-secret wandb-key
      launchctl sync config --json
    """
    from launchctl.sync import settings

    changes = {
        key: value
        for key, value in (
            ("sync.base_url", base_url),
            ("sync.entity", entity),
            ("sync.project", project),
            ("sync.key_secret", key_secret),
        )
        if value is not None
    }
    store = open_store()
    if changes or unset:
        shown = settings.configure(store, changes, list(unset))
    else:
        shown = settings.show(store)
    if as_json:
        emit_json(shown)
        return
    table(
        ([key, value if value is not None else "-"] for key, value in shown["settings"].items()),
        ["setting", "value"],
    )
    if shown.get("error"):
        line(f"a sync would stop here: {shown['error']}")
        return
    line(f"base URL: {shown['base_url']} (from {shown['base_url_source']})")
    line(f"API key: {shown['api_key']}")
