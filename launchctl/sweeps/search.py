"""The search: which parameters a sweep's next trial gets (issue 15).

``grid`` walks every combination once, in W&B's order (the W&B ``sweeps`` engine's
``grid_search_next_runs``: parameters sorted by name, the first one varying slowest,
``int_uniform`` as every integer from min to max, ``q_uniform`` as ``arange(min, max,
q)``); ``random`` and ``bayes`` ask optuna (``RandomSampler``, ``TPESampler``), a
well-kept library, rather than hand-written optimisation.

The search keeps nothing between proposals: ``propose`` gets the sweep's trials as the
store knows them and rebuilds optuna's study from them (ask/tell), so a restarted
scheduler continues where the last one stopped. A trial in flight is told to optuna as
running (TPE's constant liar keeps parallel workers apart); a failed one as failed.

W&B's distributions map onto optuna's: ``int_uniform`` an ``IntDistribution``;
``uniform`` and the ``log_uniform``/``inv_log_uniform`` family a ``FloatDistribution``
(``log=True`` over the same range of values); ``q_*`` round the value to a multiple of
``q`` as W&B does; ``values`` a categorical over the values' positions (any JSON value).
Those optuna has no distribution for (``normal``, ``log_normal``, ``beta``, their ``q_``
forms, and ``values`` with ``probabilities``) are searched through their quantile:
optuna picks ``u`` in (0, 1) and the value is the distribution's inverse CDF at ``u``,
as W&B's engine samples them.

optuna and numpy are imported inside functions: the CLI starts without them.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from launchctl.errors import ConfigError

METHODS = ("grid", "random", "bayes")
# What random and bayes search with: not in the base install (the ``sweeps`` extra).
NEEDS_OPTUNA = (
    "optuna, which is not installed for launchctl's Python: pip install 'launchctl[sweeps]'"
    " (or pip install optuna)"
)


def available() -> bool:
    """Whether optuna can be imported (looked up, not imported: that takes a third of a
    second)."""
    import importlib.util

    try:
        return importlib.util.find_spec("optuna") is not None
    except (ImportError, ValueError):
        return False


def _optuna() -> Any:
    """optuna, or a ConfigError saying how to install it (a sweep made before it was
    removed from launchctl's Python: its scheduler says so in one line)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            f"sweep config: random and bayes search (and a sampler) need {NEEDS_OPTUNA}"
        ) from None
    return optuna


# W&B's distribution names (the sweeps engine's schema.json).
DISTRIBUTIONS = frozenset(
    {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
     "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
     "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta",
     "q_beta", "categorical_w_probabilities"}
)  # fmt: skip
_LOG = {"log_uniform", "q_log_uniform", "inv_log_uniform"}  # min/max are exponents (W&B v1)
_LOG_VALUES = {"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"}
_QUANTILE = {"normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta",
             "categorical_w_probabilities"}  # fmt: skip
_GRID_KINDS = {"constant", "categorical", "int_uniform", "q_uniform"}
# The name optuna knows a nested parameter by: W&B's path, joined (never a key of its own).
_SEP = "."
_U_LOW, _U_HIGH = 1e-9, 1 - 1e-9


@dataclass(frozen=True)
class Param:
    """One searched (or constant) parameter: its path in the run config and its law."""

    path: tuple[str, ...]
    kind: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return _SEP.join(self.path)


def _number(spec: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"sweep config: parameter {where}: {key} must be a finite number")
    return value


def _kind(spec: dict[str, Any], where: str) -> str:
    """W&B's inference when ``distribution`` is not given (the sweeps engine's
    HyperParameter): ``value`` constant, ``values`` categorical (with ``probabilities``:
    weighted), ``min``/``max`` integers int_uniform, otherwise uniform."""
    given = spec.get("distribution")
    if given is not None:
        if given not in DISTRIBUTIONS:
            raise ConfigError(
                f"sweep config: parameter {where}: unknown distribution {str(given)[:40]!r}"
            )
        if given == "categorical" and "probabilities" in spec:
            return "categorical_w_probabilities"
        return str(given)
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec and "max" in spec:
        both_int = all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        )
        return "int_uniform" if both_int else "uniform"
    if "mu" in spec or "sigma" in spec:
        return "normal"
    raise ConfigError(
        f"sweep config: parameter {where}: give value, values, min and max, or a distribution"
    )


def _check(param: Param) -> None:
    spec, where, kind = param.spec, param.name, param.kind
    if kind == "constant":
        if "value" not in spec:
            raise ConfigError(f"sweep config: parameter {where}: constant needs value")
        return
    if kind in ("categorical", "categorical_w_probabilities"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep config: parameter {where}: values must be a non-empty list")
        if kind == "categorical_w_probabilities":
            probs = spec.get("probabilities")
            if (
                not isinstance(probs, list)
                or len(probs) != len(values)
                or not all(isinstance(p, int | float) and p >= 0 for p in probs)
                or not math.isclose(sum(probs), 1.0, abs_tol=1e-6)
            ):
                raise ConfigError(
                    f"sweep config: parameter {where}: probabilities must be one number >= 0"
                    " per value, summing to 1"
                )
        return
    if kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
        _number(spec, "mu", where, 0.0)
        if _number(spec, "sigma", where, 1.0) <= 0:
            raise ConfigError(f"sweep config: parameter {where}: sigma must be above 0")
    elif kind in ("beta", "q_beta"):
        if _number(spec, "a", where, 1.0) <= 0 or _number(spec, "b", where, 1.0) <= 0:
            raise ConfigError(f"sweep config: parameter {where}: a and b must be above 0")
    else:
        low, high = _number(spec, "min", where), _number(spec, "max", where)
        if low >= high:
            raise ConfigError(f"sweep config: parameter {where}: min must be below max")
        if kind == "int_uniform" and not all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        ):
            raise ConfigError(f"sweep config: parameter {where}: int_uniform needs integers")
        if kind in _LOG_VALUES and low <= 0:
            raise ConfigError(f"sweep config: parameter {where}: {kind} needs min above 0")
        if kind in _LOG and max(abs(low), abs(high)) > 700:
            raise ConfigError(
                f"sweep config: parameter {where}: {kind} takes exponents (e^min to e^max);"
                f" for values use {kind}_values"
            )
    if kind.startswith("q_") and _number(spec, "q", where, 1.0) <= 0:
        raise ConfigError(f"sweep config: parameter {where}: q must be above 0")


def space(parameters: Any) -> list[Param]:
    """W&B's ``parameters`` block as a list of parameters, nested ones flattened, sorted
    by name at each level as W&B's engine sorts them. Raises ConfigError (one line)."""
    out: list[Param] = []

    def walk(block: Any, prefix: tuple[str, ...]) -> None:
        if not isinstance(block, dict) or not block:
            where = _SEP.join(prefix) or "parameters"
            raise ConfigError(f"sweep config: {where} must be a non-empty mapping")
        for key in sorted(block, key=str):
            spec = block[key]
            path = (*prefix, str(key))
            if not isinstance(spec, dict):
                raise ConfigError(f"sweep config: parameter {_SEP.join(path)} must be a mapping")
            nested = "parameters" in spec and not (
                {"value", "values", "min", "max", "distribution"} & set(spec)
            )
            if nested:
                walk(spec["parameters"], path)
                continue
            param = Param(path, _kind(spec, _SEP.join(path)), spec)
            _check(param)
            out.append(param)

    walk(parameters, ())
    return out


def check(method: str, parameters: Any) -> list[Param]:
    """The parameters, checked for ``method`` (W&B's grid takes only discrete ones)."""
    if method not in METHODS:
        raise ConfigError(f"sweep config: method must be one of {', '.join(METHODS)}")
    params = space(parameters)
    if method == "grid":
        for p in params:
            if p.kind not in _GRID_KINDS:
                raise ConfigError(
                    f"sweep config: parameter {p.name} is a {p.kind} distribution; grid search"
                    " takes only categorical, constant, int_uniform or q_uniform parameters"
                )
    return params


# -- values ---------------------------------------------------------------------------------
def _grid_values(p: Param) -> list[Any]:
    if p.kind == "constant":
        return [p.spec["value"]]
    if p.kind == "int_uniform":
        return list(range(p.spec["min"], p.spec["max"] + 1))
    if p.kind == "q_uniform":
        import numpy as np

        q = p.spec.get("q", 1.0)
        out = np.arange(p.spec["min"], p.spec["max"], q).tolist()
        return [int(v) for v in out] if isinstance(q, int) else out
    return list(p.spec["values"])


def _key(value: Any) -> str:
    """A value's identity, whatever JSON it is (1 and 1.0 are one value, as in W&B)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def _quantize(value: float, spec: dict[str, Any]) -> float | int:
    q = spec.get("q", 1.0)
    out = round(value / q) * q
    return int(out) if isinstance(q, int) else float(out)


def _beta_table(a: float, b: float) -> tuple[Any, Any]:
    import numpy as np

    x = (np.arange(20000) + 0.5) / 20000
    pdf = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x))
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    return x, cdf


def _from_quantile(p: Param, u: float) -> Any:
    """The value at quantile ``u`` of a distribution optuna has no law for."""
    from statistics import NormalDist

    s = p.spec
    if p.kind == "categorical_w_probabilities":
        total = 0.0
        for value, prob in zip(s["values"], s["probabilities"], strict=True):
            total += prob
            if u < total:
                return value
        return s["values"][-1]
    if p.kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
        x = NormalDist(s.get("mu", 0.0), s.get("sigma", 1.0)).inv_cdf(u)
        if p.kind in ("log_normal", "q_log_normal"):
            x = math.exp(min(x, 700.0))
    else:
        import numpy as np

        grid, cdf = _beta_table(s.get("a", 1.0), s.get("b", 1.0))
        x = float(np.interp(u, cdf, grid))
    return _quantize(x, s) if p.kind.startswith("q_") else x


def _to_quantile(p: Param, value: Any) -> float | None:
    """The quantile a stored value sits at (to tell optuna about a past trial)."""
    from statistics import NormalDist

    s = p.spec
    if p.kind == "categorical_w_probabilities":
        total = 0.0
        for item, prob in zip(s["values"], s["probabilities"], strict=True):
            if _key(item) == _key(value):
                return min(max(total + prob / 2, _U_LOW), _U_HIGH)
            total += prob
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    if p.kind in ("log_normal", "q_log_normal"):
        if x <= 0:
            return None
        x = math.log(x)
    if p.kind in ("beta", "q_beta"):
        import numpy as np

        grid, cdf = _beta_table(s.get("a", 1.0), s.get("b", 1.0))
        u = float(np.interp(x, grid, cdf))
    else:
        u = NormalDist(s.get("mu", 0.0), s.get("sigma", 1.0)).cdf(x)
    return min(max(u, _U_LOW), _U_HIGH)


def _distribution(p: Param) -> Any:
    """optuna's distribution for ``p`` (None for a constant)."""
    _optuna()
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    s = p.spec
    if p.kind == "constant":
        return None
    if p.kind == "categorical":
        return CategoricalDistribution(list(range(len(s["values"]))))
    if p.kind in _QUANTILE:
        return FloatDistribution(_U_LOW, _U_HIGH)
    if p.kind == "int_uniform":
        return IntDistribution(s["min"], s["max"])
    if p.kind in ("uniform", "q_uniform"):
        return FloatDistribution(float(s["min"]), float(s["max"]))
    if p.kind in _LOG_VALUES:
        return FloatDistribution(float(s["min"]), float(s["max"]), log=True)
    if p.kind in ("log_uniform", "q_log_uniform"):
        return FloatDistribution(math.exp(s["min"]), math.exp(s["max"]), log=True)
    # inv_log_uniform: exp(-U(min, max)), log-uniform over [e^-max, e^-min].
    return FloatDistribution(math.exp(-s["max"]), math.exp(-s["min"]), log=True)


def _value(p: Param, raw: Any) -> Any:
    """The run config's value for optuna's pick ``raw``."""
    if p.kind == "categorical":
        return p.spec["values"][raw]
    if p.kind in _QUANTILE:
        return _from_quantile(p, raw)
    if p.kind.startswith("q_"):
        return _quantize(raw, p.spec)
    return raw


def _raw(p: Param, dist: Any, value: Any) -> Any:
    """optuna's pick for a stored value, or None when it no longer fits the space."""
    if p.kind == "categorical":
        keys = [_key(v) for v in p.spec["values"]]
        return keys.index(_key(value)) if _key(value) in keys else None
    if p.kind in _QUANTILE:
        return _to_quantile(p, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if p.kind == "int_uniform":
        return int(value) if dist.low <= value <= dist.high and value == int(value) else None
    return min(max(float(value), dist.low), dist.high)


# -- the run config -------------------------------------------------------------------------
def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """Values by path as the run config's nested mapping."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def lookup(config: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


# -- proposing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Past:
    """A trial as the search sees it: its parameters (the run config), and its metric:
    a number once scored, None while running (``done`` False) or when it failed."""

    params: dict[str, Any]
    value: float | None
    done: bool


def _grid_next(params: list[Param], history: list[Past]) -> dict[str, Any] | None:
    searched = [p for p in params if p.kind != "constant"]
    seen = set()
    for past in history:
        keys = []
        for p in searched:
            found, value = lookup(past.params, p.path)
            keys.append(_key(value) if found else None)
        seen.add(tuple(keys))
    choices = [_grid_values(p) for p in searched]
    for combo in itertools.product(*choices):
        if tuple(_key(v) for v in combo) in seen:
            continue
        flat = {p.path: p.spec["value"] for p in params if p.kind == "constant"}
        flat.update({p.path: v for p, v in zip(searched, combo, strict=True)})
        return nest(flat)
    return None


def grid_size(params: list[Param]) -> int:
    return math.prod(len(_grid_values(p)) for p in params if p.kind != "constant")


# W&B's optuna scheduler's ``scheduler.settings.sampler.type`` names, as optuna's classes.
SAMPLERS = ("TPESampler", "RandomSampler", "CmaEsSampler", "QMCSampler", "NSGAIISampler",
            "GPSampler")  # fmt: skip


def make_sampler(spec: dict[str, Any], seed: int | None = None) -> Any:
    """optuna's sampler for ``scheduler.settings.sampler`` (``{type: TPESampler, args:
    {...}}``, W&B's optuna scheduler's format): the class named, built with ``args``;
    ``seed`` (when given) replaces the args' seed. Raises ConfigError for a type optuna
    does not have or args it refuses."""
    optuna = _optuna()

    kind = spec.get("type")
    args = dict(spec.get("args") or {})
    if kind not in SAMPLERS or not hasattr(optuna.samplers, str(kind)):
        raise ConfigError(
            f"sweep config: scheduler.settings.sampler type {kind!r} is not one of optuna's"
            f" samplers here ({', '.join(k for k in SAMPLERS if hasattr(optuna.samplers, k))})"
        )
    if seed is not None:
        args["seed"] = seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's experimental-feature warnings
        try:
            return getattr(optuna.samplers, str(kind))(**args)
        except (TypeError, ValueError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"sweep config: scheduler.settings.sampler args refused by optuna's {kind}: {text}"
            ) from None


def _sampler(method: str, seed: int | None, spec: dict[str, Any] | None = None) -> Any:
    optuna = _optuna()

    if spec is not None:
        return make_sampler(spec, seed)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


class Searcher:
    """Proposes a sweep's trials. Keeps only its sampler (whose random state moves on
    from one proposal to the next, as in one optuna study); the trials themselves come
    from the caller each time, so one built afresh after a restart continues the sweep."""

    def __init__(
        self,
        method: str,
        params: list[Param],
        *,
        goal: str | None = "minimize",
        seed: int | None = None,
        start: int = 0,
        sampler: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.params = params
        self.goal = goal
        # ``sampler``: ``scheduler.settings.sampler`` (W&B's optuna scheduler's format);
        # its args' seed, if any, is the seed (the first scheduler's sampler is then
        # exactly optuna's own with that seed).
        self.told = method == "bayes" or sampler is not None
        if sampler is not None and isinstance((sampler.get("args") or {}).get("seed"), int):
            seed = sampler["args"]["seed"]
            if start == 0:
                self._sampler = _sampler(method, seed, sampler)
                return
        # A scheduler built after ``start`` trials seeds its sampler apart from the first
        # one's, so it does not propose the first picks again.
        self._sampler = (
            None
            if method == "grid"
            else _sampler(method, None if seed is None else seed * 1_000_003 + start, sampler)
        )

    def propose(self, history: list[Past]) -> dict[str, Any] | None:
        """The next trial's run config after ``history`` (every trial so far, in order),
        or None when the search is exhausted (a grid walked through)."""
        if self.method == "grid":
            return _grid_next(self.params, history)
        optuna = _optuna()
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction: Literal["minimize", "maximize"] = (
            "maximize" if self.goal == "maximize" else "minimize"
        )
        params = self.params
        searched = [(p, _distribution(p)) for p in params if p.kind != "constant"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's experimental-feature warnings
            study = optuna.create_study(direction=direction, sampler=self._sampler)
            dists = {p.name: d for p, d in searched}
            if self.told:
                for past in history:
                    picks: dict[str, Any] = {}
                    for p, dist in searched:
                        found, value = lookup(past.params, p.path)
                        raw = _raw(p, dist, value) if found else None
                        if raw is None:
                            break
                        picks[p.name] = raw
                    else:
                        study.add_trial(_told(past, picks, dists, TrialState, create_trial))
            trial = study.ask(dists)
        flat = {p.path: p.spec["value"] for p in params if p.kind == "constant"}
        flat.update({p.path: _value(p, trial.params[p.name]) for p, _ in searched})
        return nest(flat)


def _told(past: Past, picks: dict[str, Any], dists: dict[str, Any], states: Any, make: Any) -> Any:
    if not past.done:
        state = states.RUNNING
    elif past.value is None or not math.isfinite(past.value):
        state = states.FAIL
    else:
        state = states.COMPLETE
    value = past.value if state == states.COMPLETE else None
    return make(state=state, value=value, params=picks, distributions=dists)


def propose(
    method: str,
    params: list[Param],
    history: list[Past],
    *,
    goal: str | None = "minimize",
    seed: int | None = None,
) -> dict[str, Any] | None:
    """One proposal from a searcher built afresh for ``history`` (see ``Searcher``)."""
    return Searcher(method, params, goal=goal, seed=seed, start=len(history)).propose(history)
