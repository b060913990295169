"""W&B sweep configs, read and checked as W&B reads them (issue 15).

A launch sweep's config is W&B's sweep config (the schema of W&B's ``sweeps`` engine:
``method``, ``metric``, ``parameters``, ``run_cap``, ``early_terminate``, ``command``...)
with a launch job (``job``) or an image (``image_uri``) to run, plus two blocks that
``wandb launch-sweep`` takes out before it stores the sweep: ``scheduler`` (how many
trials at once, ``num_workers``; the search's ``settings``) and ``launch`` (the queue and
what each trial's launch gets). ``parse`` does the same: the blocks come back apart.

Everything W&B's engine refuses is refused here, in one line naming the key: an unknown
method or key, a malformed parameter (its shape decides its distribution, as in W&B's
schema), ``min`` not below ``max``, probabilities that do not sum to 1. A few things W&B
only finds once the sweep runs are refused at once: a grid over a continuous parameter,
bayes or hyperband without a metric, a ``command`` macro nobody fills in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from launchctl.errors import ConfigError

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# W&B's scheduler: a scheduler.num_workers that is not a whole number means 8 workers.
DEFAULT_NUM_WORKERS = 8
MAX_NUM_WORKERS = 1024
MAX_PARAMETERS = 1000
MAX_DEPTH = 8  # nested parameters, levels

# The sweep config's own keys (W&B's schema), besides the two blocks taken out.
_TOP_KEYS = frozenset({
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri",
    "entity", "project", "method", "command", "name", "run_cap", "metric", "metrics",
    "early_terminate", "parameters",
})  # fmt: skip
_STRING_KEYS = ("apiVersion", "description", "program", "job", "image_uri", "entity",
                "project", "name")  # fmt: skip
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# Each distribution: its keys besides "distribution", which are required, and defaults.
_Q = {"q": 1.0}
_NORMAL = {"mu": 0.0, "sigma": 1.0}
_BETA = {"a": 1.0, "b": 1.0}
DISTRIBUTIONS: dict[str, tuple[frozenset[str], frozenset[str], dict[str, float]]] = {
    "constant": (frozenset({"value"}), frozenset({"value"}), {}),
    "categorical": (frozenset({"values"}), frozenset({"values"}), {}),
    "categorical_w_probabilities": (
        frozenset({"values", "probabilities"}), frozenset({"values", "probabilities"}), {},
    ),
    "int_uniform": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "uniform": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "q_uniform": (frozenset({"min", "max", "q"}), frozenset({"min", "max"}), _Q),
    "log_uniform": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "log_uniform_values": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "q_log_uniform": (frozenset({"min", "max", "q"}), frozenset({"min", "max"}), _Q),
    "q_log_uniform_values": (frozenset({"min", "max", "q"}), frozenset({"min", "max"}), _Q),
    "inv_log_uniform": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "inv_log_uniform_values": (frozenset({"min", "max"}), frozenset({"min", "max"}), {}),
    "normal": (frozenset({"mu", "sigma"}), frozenset(), _NORMAL),
    "q_normal": (frozenset({"mu", "sigma", "q"}), frozenset(), {**_NORMAL, **_Q}),
    "log_normal": (frozenset({"mu", "sigma"}), frozenset(), _NORMAL),
    "q_log_normal": (frozenset({"mu", "sigma", "q"}), frozenset(), {**_NORMAL, **_Q}),
    "beta": (frozenset({"a", "b"}), frozenset(), _BETA),
    "q_beta": (frozenset({"a", "b", "q"}), frozenset(), {**_BETA, **_Q}),
}  # fmt: skip
# W&B's deprecated forms (min/max are exponents of e): accepted with W&B's warning.
DEPRECATED = {
    "log_uniform": "log_uniform_values",
    "q_log_uniform": "q_log_uniform_values",
    "inv_log_uniform": "inv_log_uniform_values",
}
# The distributions a grid can enumerate (W&B's grid search allows these only).
GRID_DISTRIBUTIONS = frozenset({"constant", "categorical", "int_uniform", "q_uniform"})


@dataclass
class SweepConfig:
    """A checked sweep config: ``config`` is what is stored as the sweep's config (W&B's
    config without ``scheduler`` and ``launch``), ``parameters`` its parameters with their
    distributions filled in, ``notes`` W&B's warnings, said once the sweep is made."""

    config: dict[str, Any]
    scheduler: dict[str, Any]
    launch: dict[str, Any]
    method: str
    metric_name: str | None
    metric_goal: str | None
    num_workers: int
    run_cap: int | None
    parameters: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def flat_parameters(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(dotted name, filled spec) of every leaf parameter, nested ones included."""
        return flatten(self.parameters)


def flatten(parameters: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in parameters.items():
        if "parameters" in spec:
            yield from flatten(spec["parameters"], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", spec


def load(value: str) -> dict[str, Any]:
    """A sweep config from a YAML/JSON file (or inline JSON), as W&B's launch-sweep loads it."""
    from launchctl.configfile import load_mapping

    return load_mapping(value, "sweep config")


def _refuse(message: str) -> ConfigError:
    return ConfigError(f"sweep config: {message}")


def _shown(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(spec: dict[str, Any], key: str, where: str, *, integer: bool = False) -> None:
    value = spec[key]
    ok = _is_int(value) if integer else _is_number(value)
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise _refuse(f"{where}: {key} must be {kind}, not {_shown(value)}")


def distribution_of(spec: dict[str, Any]) -> str:
    """The distribution W&B's schema gives a parameter of this shape."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "probabilities" in spec:
        return "categorical_w_probabilities"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        both = _is_int(spec["min"]) and _is_int(spec["max"])
        return "int_uniform" if both else "uniform"
    return ""


def check_parameters(parameters: Any, where: str = "parameters", depth: int = 0) -> dict[str, Any]:
    """W&B's parameters, checked; returned with each distribution and its defaults filled in."""
    if not isinstance(parameters, dict) or not parameters:
        raise _refuse(f"{where} must be a mapping of one or more parameters")
    if depth > MAX_DEPTH:
        raise _refuse(f"{where}: nested more than {MAX_DEPTH} levels")
    if len(parameters) > MAX_PARAMETERS:
        raise _refuse(f"{where}: more than {MAX_PARAMETERS} parameters")
    filled: dict[str, Any] = {}
    for name, spec in parameters.items():
        if not _PARAM_NAME.fullmatch(name) or len(name) > 128:
            raise _refuse(
                f"invalid parameter name {_shown(name)} in {where}: a letter or _ first, then"
                " letters, digits, _ . or -"
            )
        filled[name] = check_parameter(spec, f"{where}.{name}", depth)
    return filled


def check_parameter(spec: Any, where: str, depth: int = 0) -> dict[str, Any]:
    """One parameter, as W&B's schema reads it: its shape (or ``distribution``) decides."""
    if not isinstance(spec, dict):
        raise _refuse(f"{where} must be a mapping (values, value, min/max, distribution...)")
    if "parameters" in spec:
        if len(spec) != 1:
            others = sorted(set(spec) - {"parameters"})
            raise _refuse(f"{where}: nested parameters take no other keys ({', '.join(others)})")
        return {"parameters": check_parameters(spec["parameters"], where, depth + 1)}
    dist = distribution_of(spec)
    if dist not in DISTRIBUTIONS:
        if not dist:
            raise _refuse(
                f"{where} is malformed: give values, value, min and max, or a distribution"
            )
        raise _refuse(
            f"{where}: unknown distribution {_shown(dist)} (one of: {', '.join(DISTRIBUTIONS)})"
        )
    keys, required, defaults = DISTRIBUTIONS[dist]
    unknown = sorted(set(spec) - keys - {"distribution"})
    if unknown:
        raise _refuse(f"{where}: {', '.join(unknown)} is not a key of a {dist} parameter")
    missing = sorted(required - set(spec))
    if missing:
        raise _refuse(f"{where}: a {dist} parameter needs {' and '.join(missing)}")
    out: dict[str, Any] = {"distribution": dist, **defaults, **spec}
    _check_values(out, dist, where)
    return out


def _check_values(spec: dict[str, Any], dist: str, where: str) -> None:
    if dist in ("categorical", "categorical_w_probabilities"):
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _refuse(f"{where}: values must be a list of one or more values")
    if dist == "categorical_w_probabilities":
        probs = spec["probabilities"]
        if not isinstance(probs, list) or not all(_is_number(p) and p >= 0 for p in probs):
            raise _refuse(f"{where}: probabilities must be a list of numbers, each 0 or more")
        if len(probs) != len(spec["values"]):
            raise _refuse(f"{where}: values and probabilities are not the same length")
        if not math.isclose(sum(probs), 1.0, rel_tol=1e-5, abs_tol=1e-8):
            raise _refuse(f"{where}: probabilities {_shown(probs)} do not sum to 1")
    if "min" in spec:
        integer = dist == "int_uniform"
        _number(spec, "min", where, integer=integer)
        _number(spec, "max", where, integer=integer)
        if spec["min"] >= spec["max"]:
            raise _refuse(f"{where}: min {spec['min']} is not less than max {spec['max']}")
        if dist.endswith("_values") and spec["min"] <= 0:
            raise _refuse(f"{where}: a {dist} parameter needs min above 0, not {spec['min']}")
    for key in ("q", "mu", "sigma", "a", "b"):
        if key in spec:
            _number(spec, key, where)
    if "q" in spec and spec["q"] <= 0:
        raise _refuse(f"{where}: q must be above 0, not {spec['q']}")
    for key in ("sigma", "a", "b"):
        if key in spec and spec[key] < 0:
            raise _refuse(f"{where}: {key} must be 0 or more, not {spec[key]}")


def _check_metric(metric: Any) -> tuple[str, str]:
    if not isinstance(metric, dict):
        raise _refuse("metric must be a mapping with a name (and a goal)")
    unknown = sorted(set(metric) - {"name", "goal", "target", "impute", "impute_while_running"})
    if unknown:
        raise _refuse(f"metric: {', '.join(unknown)} is not a key of metric")
    name = metric.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _refuse("metric needs a name (the key the run reports, e.g. val_loss)")
    if len(name) > 256 or not name.isprintable():
        raise _refuse(f"metric name {_shown(name)} must be 1-256 printable characters")
    goal = metric.get("goal", "minimize")
    if goal not in GOALS:
        raise _refuse(f"metric goal must be minimize or maximize, not {_shown(goal)}")
    if "target" in metric and not _is_number(metric["target"]):
        raise _refuse(f"metric target must be a number, not {_shown(metric['target'])}")
    imputes = {"impute": ("latest", "best", "worst"),
               "impute_while_running": ("latest", "best", "worst", "false")}  # fmt: skip
    for key, allowed in imputes.items():
        if key in metric and metric[key] not in allowed:
            raise _refuse(f"metric {key} must be one of {', '.join(allowed)}")
    return name, goal


def _check_early_terminate(block: Any) -> None:
    if not isinstance(block, dict):
        raise _refuse("early_terminate must be a mapping (type: hyperband, min_iter...)")
    if block.get("type") != "hyperband":
        raise _refuse(f"early_terminate type must be hyperband, not {_shown(block.get('type'))}")
    unknown = sorted(set(block) - {"type", "min_iter", "max_iter", "s", "eta", "strict"})
    if unknown:
        raise _refuse(f"early_terminate: {', '.join(unknown)} is not a key of hyperband")
    if "min_iter" not in block and not ("max_iter" in block and "s" in block):
        raise _refuse("early_terminate (hyperband) needs min_iter, or max_iter and s")
    for key in ("min_iter", "max_iter"):
        if key in block:
            _number(block, key, "early_terminate", integer=True)
    if "min_iter" in block and block["min_iter"] < 1:
        raise _refuse("early_terminate min_iter must be 1 or more")
    if "max_iter" in block and block["max_iter"] < 1:
        raise _refuse("early_terminate max_iter must be 1 or more")
    if "s" in block:
        _number(block, "s", "early_terminate")
    if "eta" in block:
        _number(block, "eta", "early_terminate")
        if block["eta"] <= 1:
            raise _refuse("early_terminate eta must be above 1")
    if "strict" in block and not isinstance(block["strict"], bool):
        raise _refuse("early_terminate strict must be true or false")


def _check_hyperband(config: dict[str, Any]) -> None:
    """W&B's own engine stops the trials (launchctl.sweeps.early): it must be installed,
    and take this early_terminate (its bands: e.g. max_iter 2 with eta 3 has none)."""
    from launchctl.sweeps import early

    if not early.available():
        raise _refuse(
            "early_terminate (hyperband) needs W&B's sweep engine, the sweeps package:"
            " pip install 'launchctl[sweeps]'"
        )
    probe = {"metric": config["metric"], "early_terminate": dict(config["early_terminate"])}
    try:
        early.decide(probe, [("probe", [1.0], True)])
    except ValueError as exc:  # the engine's refusal, e.g. no band
        text = str(exc).splitlines()[0] if str(exc) else "refused"
        raise _refuse(f"early_terminate: W&B's hyperband refuses it: {text}") from None


def _check_sampler(spec: Any, method: str, note: Callable[[str], None]) -> None:
    """``scheduler.settings.sampler``: W&B's optuna scheduler's ``{type: ..., args: {...}}``,
    built here once so that a type optuna lacks or args it refuses are said now."""
    from launchctl.sweeps.search import make_sampler

    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise _refuse("scheduler.settings.sampler must be {type: TPESampler, args: {...}}")
    unknown = sorted(set(spec) - {"type", "args"})
    if unknown:
        raise _refuse(f"scheduler.settings.sampler: {', '.join(unknown)} is not type or args")
    if spec.get("args") is not None and not isinstance(spec["args"], dict):
        raise _refuse("scheduler.settings.sampler args must be a mapping of name: value")
    try:
        make_sampler(spec)
    except ConfigError as exc:
        raise _refuse(str(exc).removeprefix("sweep config: ")) from None
    if method == "grid":
        note("note: scheduler.settings.sampler is not used by method grid (it walks the grid)")


def _check_scheduler(block: Any, say: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    if not isinstance(block, dict):
        raise _refuse("scheduler must be a mapping (num_workers, settings...)")
    block = dict(block)
    if block.get("job"):
        # W&B runs its scheduler as a launch job of its own (experimental there); here the
        # scheduler runs inside the agent serving the queue, so a scheduler job has no place.
        raise _refuse(
            "scheduler.job (a custom scheduler job) is not supported: launchctl's scheduler runs"
            " inside the agent serving the queue; remove scheduler.job"
        )
    resource = block.get("resource")
    if resource is not None and not isinstance(resource, str):
        raise _refuse("scheduler.resource must be a string")
    if resource == "local-process" and block.get("docker_image"):
        raise _refuse(  # W&B's own refusal
            "scheduler jobs cannot be run with the 'local-process' resource and a docker image"
        )
    ignored = [k for k in ("resource", "resource_args", "docker_image", "template_variables")
               if k in block]  # fmt: skip
    if ignored:
        say(
            f"note: scheduler {', '.join(ignored)} said where W&B's scheduler runs; launchctl's"
            " runs inside the agent serving the queue, so they are kept but not used"
        )
    raw = block.get("num_workers", DEFAULT_NUM_WORKERS)
    # W&B takes any whole number written as digits and silently uses 8 for anything else;
    # a value that cannot be what was meant is refused here instead.
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if not _is_int(raw) or not 1 <= raw <= MAX_NUM_WORKERS:
        raise _refuse(
            f"scheduler.num_workers must be a whole number from 1 to {MAX_NUM_WORKERS},"
            f" not {_shown(raw)}"
        )
    settings = block.get("settings", {})
    if not isinstance(settings, dict):
        raise _refuse("scheduler.settings must be a mapping (e.g. method, sampler, pruner)")
    return block, raw


def _check_launch(block: Any) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise _refuse("launch must be a mapping (queue, priority, template_variables...)")
    if "queue" in block and (not isinstance(block["queue"], str) or not block["queue"]):
        raise _refuse("launch.queue must be a queue name")
    tv = block.get("template_variables")
    if tv is not None and not isinstance(tv, dict):
        raise _refuse("launch.template_variables must be a mapping of name: value")
    return dict(block)


def _check_command(command: Any, config: dict[str, Any]) -> None:
    from launchctl.sweeps.command import check_command

    if not isinstance(command, list) or not command:
        raise _refuse("command must be a list of words, e.g. [python, train.py, ${args}]")
    check_command(command, program=config.get("program"))


def parse(raw: dict[str, Any], *, say: Callable[[str], None] = lambda _line: None) -> SweepConfig:
    """Check a loaded sweep config; ``say`` gets W&B's warnings (said once it is stored).

    Takes out ``scheduler`` and ``launch`` as W&B's launch-sweep does, and a
    ``scheduler.settings.method`` replaces ``method``, as W&B's does."""
    if not isinstance(raw, dict):
        raise _refuse("must be a mapping")
    config = dict(raw)
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        say(line)

    launch = _check_launch(config.pop("launch", {}) or {})
    scheduler, num_workers = _check_scheduler(config.pop("scheduler", {}) or {}, note)
    settings = scheduler.get("settings") or {}
    if settings.get("method"):
        config["method"] = settings["method"]
    unknown = sorted(set(config) - _TOP_KEYS)
    if unknown:
        raise _refuse(f"unknown key {unknown[0]!r} (W&B's sweep config has no such key)")
    for key in _STRING_KEYS:
        if key in config and not isinstance(config[key], str):
            raise _refuse(f"{key} must be a string, not {_shown(config[key])}")
    job, image = config.get("job"), config.get("image_uri")
    if not job and not image:  # W&B's refusal, in its words
        raise _refuse(
            "no 'job' nor 'image_uri' top-level key found, exactly one is required for a"
            " launch-sweep"
        )
    if job and image:
        raise _refuse("has both 'job' and 'image_uri' but a launch-sweep can use only one")
    if image:
        from launchctl.imageref import check_image_ref

        check_image_ref(image, "sweep config: image_uri")
    method = config.get("method")
    if method is None:
        raise _refuse("method is required: grid, random or bayes")
    if method == "custom":
        raise _refuse(
            "method custom needs a custom scheduler job, which launchctl does not run:"
            " use grid, random or bayes (optuna's sampler and pruner go in scheduler.settings)"
        )
    if method not in METHODS:
        raise _refuse(f"unknown method {_shown(method)}: use grid, random or bayes")
    from launchctl.sweeps import search

    if method != "grid" and not search.available():
        raise _refuse(f"method {method} searches with {search.NEEDS_OPTUNA}")
    if "metrics" in config:
        raise _refuse("metrics (several objectives) needs method custom; use one metric")
    metric_name = metric_goal = None
    if "metric" in config:
        metric_name, metric_goal = _check_metric(config["metric"])
    elif method == "bayes":
        raise _refuse("method bayes needs a metric (name and goal) to optimise")
    if "parameters" not in config:
        raise _refuse("parameters is required (the values to sweep over)")
    parameters = check_parameters(config["parameters"])
    for name, spec in flatten(parameters):
        if spec["distribution"] in DEPRECATED:
            note(  # W&B's own warning
                f"warning: {name} uses {spec['distribution']}, where min/max are base-e"
                f" exponents; use {DEPRECATED[spec['distribution']]} to give limit values"
            )
        if method == "grid" and spec["distribution"] not in GRID_DISTRIBUTIONS:
            raise _refuse(
                f"grid search needs every parameter discrete (values, value, int_uniform or"
                f" q_uniform): {name} is {spec['distribution']}"
            )
    run_cap = config.get("run_cap")
    if run_cap is not None and (not _is_int(run_cap) or run_cap < 1):
        raise _refuse(f"run_cap must be a whole number above 0, not {_shown(run_cap)}")
    if "early_terminate" in config:
        _check_early_terminate(config["early_terminate"])
        if metric_name is None:
            raise _refuse("early_terminate needs a metric to compare runs by")
    if "early_terminate" in config:
        _check_hyperband(config)
    if "sampler" in settings:
        _check_sampler(settings["sampler"], str(method), note)
    # Said while the scheduler does not apply them, so that nobody believes an optuna
    # pruner stopped their weak trials (hyperband, above, does).
    unused = sorted(set(settings) - {"method", "seed", "sampler"})
    if unused:
        note(
            f"note: scheduler.settings {', '.join(unused)} kept but not used yet: launchctl"
            " applies method, seed and sampler (early termination: early_terminate hyperband)"
        )
    if "controller" in config:
        ctrl = config["controller"]
        if not isinstance(ctrl, dict) or ctrl.get("type") not in ("local", "cloud"):
            raise _refuse("controller must be {type: local} or {type: cloud}")
    if "kind" in config and config["kind"] != "sweep":
        raise _refuse(f"kind must be sweep, not {_shown(config['kind'])}")
    if "command" in config:
        _check_command(config["command"], config)
    return SweepConfig(
        config=config,
        scheduler=scheduler,
        launch=launch,
        method=str(method),
        metric_name=metric_name,
        metric_goal=metric_goal,
        num_workers=num_workers,
        run_cap=run_cap,
        parameters=parameters,
        notes=notes,
    )
