"""`launchctl images ...`: the images launchctl built, and removing those no job needs."""

from __future__ import annotations

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, err, table

app = typer.Typer(
    help="List the images launchctl built, and prune those no job version needs.\n\n\b\n"
    "Example:\n  launchctl images prune --yes",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List the images launchctl built on this Docker engine, newest first.

    STATUS: 'in use' (a queued or running run names it), 'kept' (a job version of this
    home points at it, or another home reused it), 'unused' (images prune removes it, or
    only this home's name for it when another home built it), 'built elsewhere' (another
    launchctl home built it, or it carries no home label: never pruned here). SIZE is the
    image's whole size; OWN the bytes no other image shares (what a prune gives back).
    BASE: the images it was built on, with their digest (or local image ID).

    \b
    Example:
      launchctl images list --json
    """
    from launchctl import housekeeping as hk

    images = hk.list_images(open_store())
    if as_json:
        emit_json(images)
        return
    if not images:
        print("no images built by launchctl on this engine")
        return
    table(
        [
            (
                i["id"],
                ", ".join(i["names"]) or "<none>",
                hk.human_size(int(i["size"])),
                "-" if i["unique_size"] is None else hk.human_size(int(i["unique_size"])),
                i["status"],
                ", ".join(i["versions"])
                or (f"{i['other_homes']} other home(s)" if i["other_homes"] else "-"),
                ", ".join(i["active_runs"]) or "-",
                ", ".join(_short_base(b) for b in i["bases"]) or "-",
            )
            for i in images
        ],
        ["id", "image", "size", "own", "status", "job versions", "active runs", "base"],
    )


def _short_base(base: str) -> str:
    """``NAME sha256:<64 hex>`` as ``NAME sha256:<12 hex>`` for the table (--json: whole)."""
    name, _, digest = base.rpartition(" ")
    algo, colon, hexa = digest.partition(":")
    return f"{name} {algo}:{hexa[:12]}" if colon and name else base


@app.command("prune")
def prune(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove the images this home built that no job version points at any more.

    Never an image a queued or running run names, one a container uses, or one another
    launchctl home built (nor one without the home label). Asks first on a terminal;
    says how much space came back (the images' own layers: shared layers stay).

    \b
    Example:
      launchctl images prune --yes
    """
    from launchctl import housekeeping as hk
    from launchctl.cli.runs import confirm

    result = hk.prune_images(open_store(), lambda question: confirm(question, yes))
    if result is None:
        err("nothing removed")
        raise typer.Exit(1)
    for image, why in result["kept"]:
        err(f"keeping {', '.join(image['names']) or image['id']}: {why}")
    removed = result["removed"]
    if not result["planned"]:
        print("no unused images to remove")
        return
    for image in removed:
        if image["frees"]:
            print(f"removed {', '.join(image['remove']) or image['id']}")
        else:
            print(f"removed {', '.join(image['remove'])} (another home built the image: it stays)")
    n = sum(1 for i in removed if i["frees"])
    print(f"removed {n} image{'s' if n != 1 else ''}, {hk.human_size(int(result['freed']))} freed")
