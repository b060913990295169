"""slurm: what ``resource_args.slurm`` may hold, and how it becomes ``sbatch`` options.

Every option is passed on sbatch's command line (``--name=value``), never written into the
batch script, and every value is checked first: one token of plain characters, so no value
can become a second option, a new script line or a shell word. Queue ceilings
(``ceilings: {cpus, memory, max_run_time}``) hold here as for the other runners: an ask above
one is refused, and a ceiling with no ask becomes the job's option.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from launchctl.guardrails import Limits

# sbatch's own long option names a queue (or a run's -R) may set.
SBATCH_OPTIONS = frozenset(
    {
        "partition",
        "account",
        "qos",
        "time",
        "nodes",
        "ntasks",
        "ntasks-per-node",
        "cpus-per-task",
        "mem",
        "mem-per-cpu",
        "gres",
        "gpus-per-node",
        "gpus-per-task",
        "constraint",
    }
)
# What the queue's ``sbatch`` list (extra #SBATCH lines) may name, and nothing else: options
# that choose where and when a job runs, never what it runs as or where its output goes.
EXTRA_OPTIONS = frozenset(
    {
        "begin",
        "exclude",
        "nodelist",
        "reservation",
        "licenses",
        "hint",
        "tmp",
        "mail-type",
        "mail-user",
        "signal",
        "nice",
        "wckey",
        "exclusive",
        "requeue",
        "no-requeue",
        "distribution",
    }
)
# launchctl's own keys: the run's environment, the agent's time limit, where code jobs are
# laid out for the nodes, and the container runtime of image jobs.
OWN_OPTIONS = frozenset({"env", "max_run_time", "shared_dir", "container", "sbatch"})
OPTIONS = SBATCH_OPTIONS | OWN_OPTIONS
RUNTIMES = ("docker", "apptainer", "enroot")

_VALUE = re.compile(r"^[A-Za-z0-9_.:,=+/@%\[\]-]{1,200}$")
_FIELD = re.compile(r"\{\{.*?\}\}")


class OptionError(ValueError):
    """A ``resource_args.slurm`` value that cannot become an sbatch option."""


def check_value(name: str, value: Any) -> str:
    """``value`` as one sbatch option value; OptionError says why not."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise OptionError(f"slurm option {name} must be a string or a number, got {value!r}")
    text = str(value)
    if text.startswith("-") or not _VALUE.match(text):
        raise OptionError(
            f"slurm option {name} has an unusable value {text[:60]!r}: letters, digits and"
            " . _ : , = + / @ % [ ] - only, not starting with -"
        )
    return text


def _extra(line: Any) -> tuple[str, str | None]:
    """One entry of ``sbatch``: ``--name=value``, ``--name value`` or ``--name``."""
    if not isinstance(line, str):
        raise OptionError(f"slurm: each sbatch line must be a string, got {line!r}")
    text = line.strip().removeprefix("#SBATCH").strip()
    match = re.fullmatch(r"--([a-z][a-z-]*)(?:[= ](.+))?", text)
    if not match:
        raise OptionError(f"slurm: sbatch line {line[:60]!r} must read --option=value")
    name, value = match.group(1), match.group(2)
    if name not in EXTRA_OPTIONS:
        allowed = ", ".join(sorted(EXTRA_OPTIONS))
        raise OptionError(f"slurm: sbatch line --{name} is not allowed (allowed: {allowed})")
    return name, (check_value(name, value) if value is not None else None)


def config_problem(config: dict[str, Any]) -> str | None:
    """Why a queue config's ``resource_args.slurm`` cannot run (checked when written):
    values holding a ``{{field}}`` are checked once rendered, when the run starts."""
    options = (config.get("resource_args") or {}).get("slurm")
    if not isinstance(options, dict):
        return None
    try:
        for name, value in options.items():
            if isinstance(value, str) and _FIELD.search(value):
                continue
            if name in SBATCH_OPTIONS:
                check_value(name, value)
            elif name == "sbatch":
                if not isinstance(value, list):
                    raise OptionError("slurm: sbatch must be a list of --option=value lines")
                for line in value:
                    if not (isinstance(line, str) and _FIELD.search(line)):
                        _extra(line)
            elif name == "container" and value not in RUNTIMES:
                raise OptionError(
                    f"slurm: container must be one of {', '.join(RUNTIMES)}, got {value!r}"
                )
            elif name == "shared_dir" and not (
                isinstance(value, str) and value.startswith("/") and ".." not in value.split("/")
            ):
                raise OptionError(f"slurm: shared_dir must be an absolute path, got {value!r}")
    except OptionError as exc:
        return str(exc)
    return None


def parse_time(text: str) -> float:
    """A Slurm time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in seconds."""
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        days = int(head)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.append(0)
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[:3]
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


_MEM_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_mem(text: str) -> int:
    """A Slurm memory size (megabytes by default; K, M, G, T suffixes) in bytes."""
    match = re.fullmatch(r"(\d+)([kmgt]?)b?", text.lower())
    if not match:
        raise OptionError(f"slurm option mem must be a size like 4000 or 4G, got {text!r}")
    return int(match.group(1)) * _MEM_UNITS[match.group(2) or "m"]


def sbatch_args(options: Mapping[str, Any], limits: Limits) -> list[str]:
    """The sbatch options for a run: its resource args, checked, held to the queue's
    ceilings (``limits``: the ceilings a run without an ask gets). OptionError says why not."""
    values = {k: check_value(k, v) for k, v in options.items() if k in SBATCH_OPTIONS}
    _hold(values, options, limits)
    args = [f"--{name}={value}" for name, value in sorted(values.items())]
    extra = options.get("sbatch") or []
    if not isinstance(extra, list):
        raise OptionError("slurm: sbatch must be a list of --option=value lines")
    for line in extra:
        name, value = _extra(line)
        args.append(f"--{name}" if value is None else f"--{name}={value}")
    return args


def _hold(values: dict[str, str], options: Mapping[str, Any], limits: Limits) -> None:
    """Apply ``limits`` (max_run_time, memory, cpus) to the job's time, mem and CPUs."""
    try:
        if limits.max_run_time is not None:
            if "time" in values:
                if parse_time(values["time"]) > limits.max_run_time:
                    raise OptionError(
                        f"the run asks for time {values['time']}, above its limit of"
                        f" {limits.max_run_time:g}s (max_run_time or the queue's ceiling)"
                    )
            else:
                values["time"] = str(max(1, math.ceil(limits.max_run_time / 60)))
        if limits.memory is not None:
            if "mem" in values:
                if parse_mem(values["mem"]) > limits.memory:
                    raise OptionError(
                        f"the run asks for mem {values['mem']}, above the queue's ceiling of"
                        f" {limits.memory // (1 << 20)}M"
                    )
            elif "mem-per-cpu" not in values:
                values["mem"] = f"{max(1, limits.memory // (1 << 20))}M"
        if limits.cpus is not None:
            asked = int(values.get("cpus-per-task", "1")) * int(values.get("ntasks", "1"))
            if "cpus-per-task" in values or "ntasks" in values:
                if asked > limits.cpus:
                    raise OptionError(
                        f"the run asks for {asked} CPUs (cpus-per-task x ntasks), above the"
                        f" queue's ceiling of {limits.cpus:g}"
                    )
            else:
                values["cpus-per-task"] = str(max(1, math.floor(limits.cpus)))
    except ValueError as exc:
        if isinstance(exc, OptionError):
            raise
        raise OptionError(f"slurm: a time, mem or CPU count cannot be read: {exc}") from None
