"""Which Dockerfile builds a job: the user's (W&B's precedence) or one rendered from a template."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from launchctl.images.model import BuildError, BuildRequest
from launchctl.jobfiles import read_inside

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "Dockerfile.j2"
# pyproject.toml dependencies are written here (in the build context) for the generated Dockerfile.
GENERATED_REQUIREMENTS = ".launchctl-requirements.txt"
USER = "launchctl"
# The BuildKit secret that holds the index settings as a pip config file, when an index URL
# holds credentials; a user Dockerfile mounts it the same way:
#   RUN --mount=type=secret,id=pip-config,target=/etc/pip.conf pip install ...
PIP_SECRET = "pip-config"
PIP_SECRET_FILE = "/run/secrets/launchctl-pip.conf"
WORKDIR = "/launchctl/code"
VENV = "/launchctl/venv"
_PY = re.compile(r"^python(\d+(\.\d+)?)?$")
_SYNTAX = re.compile(r"^\s*#\s*syntax\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile's text and where it came from.

    ``path`` is its place in the build context for a user Dockerfile, None when rendered;
    ``files`` are generated files the build writes into the context first.
    """

    text: str
    source: str
    path: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def context_root(req: BuildRequest) -> Path:
    """The folder a user Dockerfile builds from: the job's build context (W&B's
    ``job create -b``, relative to the job's root), else the job's root. A context that is
    absolute, climbs out with ``..`` or leaves the job through a link is refused."""
    root = req.source_dir
    if not req.build_context:
        return root
    given = req.build_context
    if PurePosixPath(given).is_absolute() or ".." in PurePosixPath(given).parts:
        raise BuildError(f"build context {given} must be a folder inside the job")
    full = (root / given).resolve()
    if not full.is_relative_to(root.resolve()):
        raise BuildError(f"build context {given} points outside the job's files")
    if not full.is_dir():
        raise BuildError(f"build context {given} is not a folder of the job")
    return full


def choose(req: BuildRequest) -> Dockerfile:
    """W&B's order: the override (-D), the job's Dockerfile, Dockerfile.wandb beside the
    entrypoint; else a Dockerfile rendered from the template. Each path is read in the build
    context (``context_root``), as W&B's builder reads it. The template builds from the
    build context too: the entry point is relative to it (W&B's ``job create -E`` help)."""
    root = context_root(req)
    where = f"the build context {req.build_context}" if req.build_context else "the job's root"
    if req.dockerfile:
        rel = _inside(root, req.dockerfile)
        data = read_inside(root, rel)
        if data is None:
            raise BuildError(
                f"dockerfile {req.dockerfile} (the `dockerfile` override / -D) is not among the"
                f" job's files; the path is relative to {where}"
            )
        return _user(rel, data, f"override (-D {req.dockerfile})")
    if (data := read_inside(root, "Dockerfile")) is not None:
        return _user("Dockerfile", data, "job Dockerfile")
    beside = entrypoint_dir(req.entrypoint)
    rel = str(PurePosixPath(beside, "Dockerfile.wandb"))
    if (data := read_inside(root, rel)) is not None:
        where = f" ({rel})" if beside else ""
        return _user(rel, data, f"Dockerfile.wandb beside the entrypoint{where}")
    return render(req)


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def instructions(text: str) -> list[tuple[str, list[str]]]:
    """A Dockerfile's instructions as (KEYWORD, words): comment lines dropped, lines ending
    in a backslash joined to the next (as BuildKit's parser reads them)."""
    out: list[tuple[str, list[str]]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # a comment (a parser directive is one too), also inside a continuation
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = pending.split()
        pending = ""
        if words:
            out.append((words[0].upper(), words[1:]))
    if pending.split():
        words = pending.split()
        out.append((words[0].upper(), words[1:]))
    return out


def from_images(text: str, build_args: dict[str, str] | None = None) -> list[str]:
    """The images a Dockerfile builds from, each once, in order: every stage's FROM image
    (a stage named by an earlier ``AS`` and ``scratch`` left out), and the images that
    ``COPY --from=`` or ``RUN --mount=...,from=`` name. ``${NAME}`` in a FROM line is the
    value of an ARG declared before the first FROM: ``build_args`` first, then the ARG's
    default (as BuildKit fills it in); one it cannot fill stays as written."""
    args = dict(build_args or {})
    known: dict[str, str] = {}
    images: list[str] = []
    stages: set[str] = set()
    seen_from = False

    def fill(word: str) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return known.get(name, m.group(0))

        return _VAR.sub(one, word)

    def add(image: str) -> None:
        if image.lower() in stages or image.isdigit() or image.lower() == "scratch":
            return
        if image and image not in images:
            images.append(image)

    for keyword, words in instructions(text):
        if keyword == "ARG" and not seen_from:
            for word in words:
                name, eq, default = word.partition("=")
                value = args.get(name, default.strip("\"'") if eq else None)
                if value is not None:
                    known[name] = value
        elif keyword == "FROM":
            seen_from = True
            rest = [w for w in words if not w.startswith("--")]
            if not rest:
                continue
            add(fill(rest[0]))
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
        elif keyword in ("COPY", "ADD", "RUN"):
            for word in words:
                if not word.startswith("--"):
                    break
                if word.lower().startswith("--from="):
                    add(word.split("=", 1)[1])
                elif word.lower().startswith("--mount="):
                    for part in word.split("=", 1)[1].split(","):
                        key, _, value = part.partition("=")
                        if key.strip().lower() == "from" and value:
                            add(value)
    return images


def entrypoint_dir(entrypoint: list[str]) -> str:
    """The folder of the script a python-like entrypoint runs ("" for the job's root)."""
    if len(entrypoint) < 2 or not _PY.match(PurePosixPath(entrypoint[0]).name):
        return ""
    previous = ""
    for arg in entrypoint[1:]:
        if previous in ("-m", "-c"):
            return ""  # `python -m pkg` / `python -c code`: no script file
        if not arg.startswith("-"):
            parent = PurePosixPath(arg).parent
            return "" if parent.is_absolute() or ".." in parent.parts else str(parent).strip(".")
        previous = arg
    return ""


def _inside(root: Path, rel: str) -> str:
    if PurePosixPath(rel).is_absolute():
        raise BuildError(f"dockerfile {rel} must be a path relative to the job's root")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise BuildError(f"dockerfile {rel} points outside the job's files")
    return full.relative_to(root.resolve()).as_posix()


def _user(rel: str, data: bytes, source: str) -> Dockerfile:
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BuildError(f"cannot read dockerfile {rel}: {exc}") from None
    return Dockerfile(text=text, source=source, path=rel)


def requirements(root: Path) -> tuple[str | None, dict[str, bytes]]:
    """The requirements file to install (its name in the context) and any file to generate.

    ``requirements.txt`` at the root wins; else ``[project] dependencies`` of pyproject.toml.
    """
    if read_inside(root, "requirements.txt") is not None:
        return "requirements.txt", {}
    pyproject = read_inside(root, "pyproject.toml")
    if pyproject is None:
        return None, {}
    try:
        data = tomllib.loads(pyproject.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"cannot read the job's pyproject.toml: {exc}") from None
    deps = data.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildError("pyproject.toml: [project] dependencies must be a list of strings")
    if not deps:
        return None, {}
    text = "# generated by launchctl from pyproject.toml [project] dependencies\n"
    text += "".join(f"{d}\n" for d in deps)
    return GENERATED_REQUIREMENTS, {GENERATED_REQUIREMENTS: text.encode()}


def index_urls(req: BuildRequest) -> list[str]:
    return [u for u in [req.index_url or "", *req.extra_index_urls, *req.find_links] if u]


def has_index_credentials(req: BuildRequest) -> bool:
    """Whether a package index URL holds a user name or password (from a secret): then the
    index settings reach pip only through a BuildKit secret mount (PIP_SECRET), never the
    Dockerfile, a build arg, the build log or the image's history."""
    from launchctl.buildconfig import has_credentials

    return any(has_credentials(u) for u in index_urls(req))


def _trusted_hosts(req: BuildRequest) -> list[str]:
    # An http index that the queue names is trusted on purpose (an air-gapped lab's mirror).
    hosts = {urlsplit(u).hostname for u in index_urls(req) if u.startswith("http://")}
    return sorted(h for h in hosts if h)


def pip_config(req: BuildRequest) -> str:
    """The index settings as a pip config file, for the PIP_SECRET mount."""
    lines = ["[global]"]
    if req.index_url:
        lines.append(f"index-url = {req.index_url}")
    if req.extra_index_urls:
        lines.append(f"extra-index-url = {' '.join(req.extra_index_urls)}")
    if req.find_links:
        lines.append(f"find-links = {' '.join(req.find_links)}")
    if hosts := _trusted_hosts(req):
        lines.append(f"trusted-host = {' '.join(hosts)}")
    return "\n".join(lines) + "\n"


def redacted_index(req: BuildRequest) -> list[str]:
    """The index URLs without their credentials: what the image tag hashes, so that a new
    password does not rebuild every image, while a new index does."""
    from launchctl.buildconfig import mask_url

    return [
        f"index={mask_url(req.index_url or '')}",
        *(f"extra={mask_url(u)}" for u in req.extra_index_urls),
        *(f"links={mask_url(u)}" for u in req.find_links),
    ]


def pip_options(req: BuildRequest) -> list[str]:
    """pip flags for the request's package index settings (every build gets them); none
    when a URL holds credentials: those settings go through the PIP_SECRET mount."""
    if has_index_credentials(req):
        return []
    opts: list[str] = []
    if req.index_url:
        opts += ["--index-url", req.index_url]
    for url in req.extra_index_urls:
        opts += ["--extra-index-url", url]
    for url in req.find_links:
        opts += ["--find-links", url]
    for host in _trusted_hosts(req):
        opts += ["--trusted-host", host]
    return opts


def template_environment(user_dir: Path | None) -> jinja2.Environment:
    """The user's template folder first, then the packaged one; ``default:NAME`` always
    names the packaged template, so a user template can extend it and replace one block."""
    import jinja2

    packaged = jinja2.FileSystemLoader(str(packaged_templates()))
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        if not user_dir.is_dir():
            raise BuildError(f"template folder {user_dir} does not exist")
        loaders.append(jinja2.FileSystemLoader(str(user_dir)))
    loaders += [packaged, jinja2.PrefixLoader({"default": packaged}, delimiter=":")]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _has_syntax_directive(text: str) -> bool:
    """A ``# syntax=`` parser directive: only leading comment lines can be one."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return False
        if _SYNTAX.match(line):
            return True
    return False


def packaged_templates() -> Path:
    return Path(str(resources.files("launchctl.templates")))


def _check_base(image: str, field: str) -> None:
    """The base image goes into the FROM line: checked again here, so that a value that
    did not pass the CLI's check (a run row edited by hand) fails the build, not injects."""
    from launchctl.errors import ConfigError
    from launchctl.imageref import check_image_ref

    try:
        check_image_ref(image, field)
    except ConfigError as exc:
        raise BuildError(str(exc)) from None


def render(req: BuildRequest, name: str = TEMPLATE) -> Dockerfile:
    """Render the Dockerfile of a code or git job from the template ``name``."""
    import jinja2

    reqs, files = requirements(context_root(req))  # the template builds the context too
    env = template_environment(req.template_dir)
    base = req.base_image or req.default_base_image
    _check_base(base, "builder.accelerator.base_image" if req.base_image else "builder.base_image")
    try:
        template = env.get_template(name)
        text = template.render(
            base_image=base,
            accelerator=bool(req.base_image),
            requirements=reqs,
            pip_options=" ".join(shlex.quote(o) for o in pip_options(req)),
            pip_secret=PIP_SECRET if has_index_credentials(req) else "",
            pip_secret_file=PIP_SECRET_FILE,
            pip_index=shlex.quote(" ".join(redacted_index(req))),
            entrypoint=list(req.entrypoint),
            entrypoint_json=json.dumps(list(req.entrypoint)),
            user=USER,
            workdir=WORKDIR,
            venv=VENV,
            build_args=dict(req.build_args),
        )
    except jinja2.TemplateError as exc:
        raise BuildError(f"cannot render Dockerfile template {name}: {exc}") from None
    if _has_syntax_directive(text):
        raise BuildError(
            f"template {name} has a `# syntax=` line: BuildKit would fetch a frontend image,"
            " which fails offline; remove it"
        )
    source = f"generated from template {name}"
    if (
        req.template_dir is not None
        and template.filename
        and Path(template.filename).is_relative_to(req.template_dir)
    ):
        source += f" in {req.template_dir}"
    return Dockerfile(text=text, source=source, files=files)
