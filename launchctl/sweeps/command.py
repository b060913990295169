"""A sweep config's ``command``: W&B's macros, filled in for one trial (issue 15).

W&B's agent builds a trial's command line from the config's ``command`` (a list of
words): a word that is a whole macro becomes zero or more words, every other word stays
as written. The macros are W&B's: ``${env}`` (``/usr/bin/env``), ``${interpreter}``
(``python``), ``${program}`` (the config's ``program``), ``${args}`` (``--name=value``
for each parameter), ``${args_no_hyphens}`` (``name=value``), ``${args_json}`` (one word,
the parameters as JSON), ``${args_no_boolean_flags}``, ``${args_no_equals}``,
``${args_append_hydra}``, ``${args_override_hydra}``, and ``${envvar:NAME}`` inside a word.

A parameter value is data: it becomes (part of) one word of the run's argument list,
never a shell word (no shell runs it), never a macro (a value is not expanded again),
never a path launchctl opens. ``${envvar:NAME}`` is filled in from the environment of
whoever creates the sweep, when it is created (W&B fills it in where its scheduler runs;
here that would be the agent's environment, which is not the sweep author's to read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from launchctl.errors import ConfigError

ENVVAR = re.compile(r"\$\{envvar:([A-Za-z0-9_]*)\}")
_MACRO = re.compile(r"\$\{([A-Za-z0-9_:]+)\}")
ARG_MACROS = (
    "args", "args_no_hyphens", "args_json", "args_no_boolean_flags", "args_no_equals",
    "args_append_hydra", "args_override_hydra",
)  # fmt: skip
WORD_MACROS = ("env", "interpreter", "program")
MAX_WORDS = 1000


def check_command(command: list[Any], *, program: Any = None) -> None:
    """Refuse a command W&B's agent would run wrongly: words that are not text, a
    ``${program}`` with no ``program``, a macro nobody fills in, ``${args_json_file}``."""
    if len(command) > MAX_WORDS:
        raise ConfigError(f"sweep config: command has over {MAX_WORDS} words")
    for word in command:
        if isinstance(word, bool) or not isinstance(word, str | int | float):
            raise ConfigError(f"sweep config: command words must be text, not {word!r:.40}")
        text = str(word)
        whole = text[2:-1] if text.startswith("${") and text.endswith("}") else None
        if whole == "program" and not program:
            raise ConfigError(  # W&B's scheduler fails each trial for it; refused at once here
                "sweep config: command uses ${program} but the config has no 'program'"
            )
        if whole == "args_json_file":
            raise ConfigError(
                "sweep config: ${args_json_file} is not supported: use ${args_json}, or read"
                " the parameters from wandb.config (WANDB_CONFIG)"
            )
        if whole is not None and not whole.startswith("envvar:"):
            if whole not in ARG_MACROS and whole not in WORD_MACROS:
                raise ConfigError(f"sweep config: command has an unknown macro {text!r:.60}")
            continue
        for match in _MACRO.finditer(ENVVAR.sub("", text)):
            raise ConfigError(
                f"sweep config: macro {match.group(0)!r} must be a whole word of command"
                " (W&B replaces only whole-word macros, except ${envvar:NAME})"
            )


def fill_envvars(command: list[Any], environ: Mapping[str, str]) -> list[str]:
    """``command`` with each ``${envvar:NAME}`` replaced by NAME's value in ``environ``
    (left as NAME when unset, as W&B does)."""
    return [ENVVAR.sub(lambda m: environ.get(m.group(1), m.group(1)), str(w)) for w in command]


def _text(value: Any) -> str:
    """A value as W&B's agent writes it in an argument (Python's str: True, None, 0.1)."""
    return str(value)


def arg_forms(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """The argument lists each ``${args...}`` macro stands for (W&B's create_sweep_command_args)."""
    forms: dict[str, list[str]] = {name: [] for name in ARG_MACROS}
    for name, value in params.items():
        pair = f"{name}={_text(value)}"
        forms["args"].append("--" + pair)
        forms["args_no_hyphens"].append(pair)
        forms["args_no_equals"] += [f"--{name}", _text(value)]
        forms["args_append_hydra"].append("+" + pair)
        forms["args_override_hydra"].append("++" + pair)
        if isinstance(value, bool):
            if value:
                forms["args_no_boolean_flags"].append(f"--{name}")
        else:
            forms["args_no_boolean_flags"].append("--" + pair)
    forms["args_json"] = [json.dumps(dict(params))]
    return forms


def build(
    command: list[Any] | None, params: Mapping[str, Any], *, program: str | None = None
) -> list[str] | None:
    """One trial's entry point: ``command`` with its macros filled in for ``params``.

    None when the config has no command: the trial runs its job's (or image's) own entry
    point, with the parameters in its run config only, as W&B's launch sweeps do.
    ``command``'s ``${envvar:NAME}`` words were filled in when the sweep was created.
    """
    if not command:
        return None
    forms = arg_forms(params)
    words = {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [program or ""]}
    out: list[str] = []
    for word in command:
        text = str(word)
        if text.startswith("${") and text.endswith("}"):
            name = text[2:-1]
            if name in forms:
                out += forms[name]
                continue
            if name in words:
                out += words[name]
                continue
        out.append(text)
    return out
