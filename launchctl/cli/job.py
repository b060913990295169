"""`launchctl job ...`: create jobs from code, images or git, and inspect them."""

from __future__ import annotations

from typing import Any

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, err, line, table, when

app = typer.Typer(
    help="Create and inspect jobs.\n\n\b\nExample:\n"
    "  launchctl job create code examples/hello -E 'python train.py'",
    no_args_is_help=True,
    rich_markup_mode=None,
)
create_app = typer.Typer(
    help="Create a job (a new version when the content changed).\n\n\b\nExample:\n"
    "  launchctl job create git https://example.org/repo.git -E 'python train.py'",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(create_app, name="create")

NAME = typer.Option(None, "--name", "-n", help="Job name (default: from the source).")
PROJECT = typer.Option(None, "--project", "-p", help="Project the job's runs log to.")
ENTITY = typer.Option(None, "--entity", "-e", help="Owning entity.")
ENTRY = typer.Option(
    None,
    "--entry-point",
    "-E",
    help="Command to run, e.g. 'python train.py' (default: main.py, as W&B's); with -b, its"
    " script is relative to the build context. Split into words like a shell line but not"
    " run through a shell: for pipes, && or $VARS use -E \"sh -c 'a && b'\".",
)
DOCKERFILE = typer.Option(
    None,
    "--dockerfile",
    "-D",
    help="Dockerfile, relative to the build context (-b), else to the job's root.",
)
DESCRIPTION = typer.Option(None, "--description", "-d", help="Description of this version.")
ALIAS = typer.Option(
    None,
    "--alias",
    "-a",
    help="Alias for this version, beside latest and vN (repeatable); moved from the version"
    " that had it. Run it with -j NAME:ALIAS.",
)
BUILD_CONTEXT = typer.Option(
    None,
    "--build-context",
    "-b",
    help="Folder of the job, from its root, that images are built from.",
)
BASE_IMAGE = typer.Option(
    None, "--base-image", "-B", help="Base image of the job's image (not for image jobs)."
)
RUNTIME = typer.Option(None, "--runtime", "-r", help="Python version the job wants, e.g. 3.11.")
GIT_HASH = typer.Option(None, "--git-hash", "-g", help="Commit, branch or tag (git jobs).")


def _report(row: dict[str, Any], created: bool, as_json: bool, warnings: list[str]) -> None:
    for warning in warnings:  # only once the job is made: bad input gets one error line
        err(f"warning: {warning}")
    if as_json:
        emit_json(dict(row, created=created))
        return
    from launchctl.jobs import version_ref

    what = "created" if created else "unchanged, reusing"
    extra = f" (aliases: {', '.join(row['aliases'])})" if row.get("aliases") else ""
    line(f"{what} job {version_ref(row)} ({row['source_type']}){extra}")


def _entrypoint(job_type: str, entry_point: str | None, warnings: list[str]) -> list[str]:
    """The entry point as W&B's ``job create`` takes it: main.py when none is given."""
    from launchctl import jobs

    if entry_point is None:
        warnings.append(f"no entry point given for the {job_type} job, defaulting to main.py")
        entry_point = jobs.DEFAULT_ENTRYPOINT
    entrypoint = jobs.parse_entrypoint(entry_point)
    jobs.check_entrypoint_stays(entrypoint)
    if len(entrypoint) == 1 and entrypoint[0].endswith(".py"):
        warnings.append(
            f"entry point {entrypoint[0]} is a python file without an executable;"
            f" you may want 'python {entrypoint[0]}'"
        )
    return entrypoint


def _ignored(job_type: str, **given: str | None) -> list[str]:
    """W&B's job create ignores these for this job type; say so rather than silently."""
    return [
        f"{flag} does not apply to {job_type} jobs; ignored"
        for flag, value in given.items()
        if value is not None
    ]


@create_app.command("code")
def create_code(
    path: str = typer.Argument(..., help="Directory to snapshot."),
    entry_point: str | None = ENTRY,
    name: str | None = NAME,
    project: str | None = PROJECT,
    entity: str | None = ENTITY,
    dockerfile: str | None = DOCKERFILE,
    description: str | None = DESCRIPTION,
    alias: list[str] | None = ALIAS,
    build_context: str | None = BUILD_CONTEXT,
    base_image: str | None = BASE_IMAGE,
    runtime: str | None = RUNTIME,
    git_hash: str | None = GIT_HASH,
    as_json: bool = JSON_OPTION,
) -> None:
    """Snapshot a directory into the store as a code job.

    \b
    Example:
      launchctl job create code examples/hello -E 'python train.py' -n hello -a prod
    """
    from launchctl import jobs

    warnings = _ignored("code", **{"-g/--git-hash": git_hash})
    row, created = jobs.create_code_job(
        open_store(),
        path,
        entrypoint=_entrypoint("code", entry_point, warnings),
        name=name,
        project=project,
        entity=entity,
        dockerfile=dockerfile,
        build_context=build_context,
        base_image=base_image,
        runtime=runtime,
        description=description,
        aliases=alias,
    )
    _report(row, created, as_json, warnings)


@create_app.command("image")
def create_image(
    image: str = typer.Argument(..., help="Image reference, e.g. registry:5000/train:1."),
    entry_point: str | None = ENTRY,
    name: str | None = NAME,
    project: str | None = PROJECT,
    entity: str | None = ENTITY,
    description: str | None = DESCRIPTION,
    alias: list[str] | None = ALIAS,
    base_image: str | None = BASE_IMAGE,
    runtime: str | None = RUNTIME,
    git_hash: str | None = GIT_HASH,
    build_context: str | None = BUILD_CONTEXT,
    dockerfile: str | None = DOCKERFILE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a job that runs a prebuilt image as it is.

    \b
    Example:
      launchctl job create image localhost:5000/train:1 -E 'python train.py'
    """
    from launchctl import jobs
    from launchctl.errors import UsageError

    if base_image is not None:  # W&B: "Cannot provide --base-image/-B for an `image` job"
        raise UsageError("cannot give --base-image/-B for an image job: the image is its base")
    warnings = _ignored(
        "image",
        **{
            "-r/--runtime": runtime,
            "-g/--git-hash": git_hash,
            "-b/--build-context": build_context,
            "-D/--dockerfile": dockerfile,
        },
    )
    row, created = jobs.create_image_job(
        open_store(),
        image,
        entrypoint=jobs.parse_entrypoint(entry_point),
        name=name,
        project=project,
        entity=entity,
        description=description,
        aliases=alias,
    )
    _report(row, created, as_json, warnings)


@create_app.command("git")
def create_git(
    url: str = typer.Argument(..., help="Repository URL (cloned at run time)."),
    entry_point: str | None = ENTRY,
    git_hash: str | None = GIT_HASH,
    name: str | None = NAME,
    project: str | None = PROJECT,
    entity: str | None = ENTITY,
    dockerfile: str | None = DOCKERFILE,
    description: str | None = DESCRIPTION,
    alias: list[str] | None = ALIAS,
    build_context: str | None = BUILD_CONTEXT,
    base_image: str | None = BASE_IMAGE,
    runtime: str | None = RUNTIME,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a job from a git repository, cloned when a run starts.

    \b
    Example:
      launchctl job create git file:///srv/git/train.git --git-hash 1a2b3c -E 'python train.py'
    """
    from launchctl import jobs

    warnings: list[str] = []
    row, created = jobs.create_git_job(
        open_store(),
        url,
        entrypoint=_entrypoint("git", entry_point, warnings),
        commit=git_hash,
        name=name,
        project=project,
        entity=entity,
        dockerfile=dockerfile,
        build_context=build_context,
        base_image=base_image,
        runtime=runtime,
        description=description,
        aliases=alias,
    )
    _report(row, created, as_json, warnings)


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List jobs and their latest version.

    \b
    Example:
      launchctl job list --json
    """
    from launchctl import jobs

    rows = jobs.listing(open_store())
    if as_json:
        emit_json(rows)
        return
    table(
        (
            [
                r["name"],
                r["source_type"],
                f"v{r['latest']}",
                r["versions"],
                r["project"],
                r["entity"],
                when(r["created_at"]),
            ]
            for r in rows
        ),
        ["name", "type", "latest", "versions", "project", "entity", "created"],
    )


@app.command("show")
def show(
    ref: str = typer.Argument(
        ...,
        help="[ENTITY/]NAME[:ALIAS] (latest, v0, v1, ...); a bare NAME is yours, else the"
        " only job of that name.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a job version and the list of its versions, each with its author.

    \b
    Example:
      launchctl job show vision/hello:v0
    """
    from launchctl import jobs

    row, versions = jobs.show(open_store(), ref)
    if as_json:
        history = [
            {
                "version": f"v{v['version']}",
                "author": v["author"],
                "created_at": v["created_at"],
                "aliases": v.get("aliases") or [],
            }
            for v in versions
        ]
        emit_json(dict(row, versions=[h["version"] for h in history], history=history))
        return
    import shlex

    aliases = ["latest"] if row["version"] == row["latest"] else []
    aliases += row.get("aliases") or []
    line(f"job:        {jobs.version_ref(row)}" + (f" ({', '.join(aliases)})" if aliases else ""))
    line(f"type:       {row['source_type']}")
    line(f"project:    {row['project']}")
    line(f"entity:     {row['entity']}")
    line(f"entrypoint: {shlex.join(row['entrypoint']) or '-'}")
    source = row["source"]
    if "snapshot" in source:
        line(
            f"source:     {source['path']} (snapshot {source['snapshot'][:12]},"
            f" {source['files']} files)"
        )
    elif "git" in source:
        line(f"source:     {source['git']['remote']} @ {source['git'].get('commit') or 'HEAD'}")
    else:
        line(f"source:     image {source['image']}")
    for entry in source.get("special") or []:  # links and FIFOs in the job, and their fate
        line(f"special:    {entry['path']}: {entry['what']}: {entry['action']}")
    meta = row.get("metadata") or {}
    if meta.get("build_context"):
        line(f"context:    {meta['build_context']}")
    if row["dockerfile"]:
        where = " (in the build context)" if meta.get("build_context") else ""
        line(f"dockerfile: {row['dockerfile']}{where}")
    if meta.get("base_image"):
        line(f"base image: {meta['base_image']}")
    if meta.get("runtime"):
        line(f"runtime:    python {meta['runtime']}")
    if row.get("description"):
        line(f"description: {row['description']}")
    line(f"author:     {_author(row['author'])}")
    line(f"created:    {when(row['created_at'])}")
    line("versions:")
    for v in versions:
        line(f"  v{v['version']:<4} {when(v['created_at'])}  by {_author(v['author'])}")


def _author(author: str | None) -> str:
    return author if author is not None else "unknown (made before authors were recorded)"


@app.command("delete")
def delete(
    ref: str = typer.Argument(..., metavar="JOB", help="NAME (every version) or NAME:vN."),
    force: bool = typer.Option(
        False, "--force", help="Delete even though ended runs were made from it."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a job, or one version of it, and the code no version needs any more.

    Refused while a queued or running run needs it; refused while ended runs were made
    from it (a rerun needs it) unless --force. Asks first on a terminal.

    \b
    Example:
      launchctl job delete hello:v0 --yes
    """
    from launchctl import housekeeping
    from launchctl.cli.runs import confirm

    done = housekeeping.delete_job(
        open_store(), ref, force=force, confirm=lambda question: confirm(question, yes)
    )
    if done is None:
        err("nothing deleted")
        raise typer.Exit(1)
    n = done["versions"]
    extra = f"; {done['runs']} ended run(s) keep their record" if done["runs"] else ""
    print(
        f"deleted {done['deleted']} ({n} version{'s' if n != 1 else ''},"
        f" {housekeeping.human_size(int(str(done['freed'])))} of code freed){extra}"
    )
