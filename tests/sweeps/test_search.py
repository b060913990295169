"""The search (issue 15): grid in W&B's order, W&B's distributions through optuna, bayes
against random, and a search rebuilt from the trials the store holds (in-process: these
are the search's own properties, not the runs')."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from typing import Any

import pytest

from launchctl.errors import ConfigError
from launchctl.sweeps import search
from launchctl.sweeps.search import Past


def walk(method: str, parameters: dict[str, Any], n: int, f: Any = None, **kw: Any) -> list[Past]:
    """``n`` trials of one scheduler (one searcher), each scored by ``f`` at once."""
    searcher = search.Searcher(method, search.check(method, parameters), **kw)
    history: list[Past] = []
    for _ in range(n):
        proposal = searcher.propose(history)
        if proposal is None:
            break
        history.append(Past(proposal, f(proposal) if f else 0.0, True))
    return history


_ORACLE = """
import json, sys, warnings
warnings.simplefilter("ignore")
import sweeps
config, runs = json.load(sys.stdin), []
while (run := sweeps.next_run(config, runs)) is not None:
    runs.append(sweeps.SweepRun(config=run.config, state="finished"))
print(json.dumps([{k: v["value"] for k, v in r.config.items()} for r in runs]))
"""


def wandb_grid(config: dict[str, Any]) -> list[dict[str, Any]]:
    """W&B's own sweep engine's grid walk (the ``sweeps`` package), as the oracle; in a
    process of its own, since this test folder's package is named ``sweeps`` too."""
    proc = subprocess.run(
        [sys.executable, "-c", _ORACLE], input=json.dumps(config), capture_output=True,
        text=True, check=True, cwd="/",
    )  # fmt: skip
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


GRID = {
    "lr": {"values": [0.1, 0.01, 0.001]},
    "batch_size": {"min": 16, "max": 17},
    "optimizer": {"parameters": {"name": {"values": ["adam", "sgd"]}}},
    "epochs": {"value": 3},
}


def test_grid_walks_every_combination_once_in_wandbs_order() -> None:
    ours = [p.params for p in walk("grid", GRID, 100)]
    assert len(ours) == 12
    assert ours == wandb_grid({"method": "grid", "parameters": GRID})
    assert (
        search.propose("grid", search.check("grid", GRID), [Past(p, 1.0, True) for p in ours])
        is None
    )


def test_grid_fills_a_gap_and_never_repeats_a_combination() -> None:
    params = search.check("grid", GRID)
    every = [p.params for p in walk("grid", GRID, 100)]
    # Trials 0-11 without 4: a restarted scheduler proposes exactly the missing one.
    history = [Past(p, 1.0, True) for i, p in enumerate(every) if i != 4]
    assert search.propose("grid", params, history) == every[4]


def test_grid_refuses_continuous_parameters_as_wandb_does() -> None:
    with pytest.raises(ConfigError, match="grid search takes only"):
        search.check("grid", {"lr": {"min": 0.0, "max": 1.0}})
    with pytest.raises(ConfigError, match="method"):
        search.check("hill-climb", GRID)


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        ({"distribution": "int_uniform", "min": 2, "max": 5}, 2, 5),
        ({"min": 0.5, "max": 1.5}, 0.5, 1.5),
        ({"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, 0, 10),
        ({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}, 1e-5, 1e-1),
        ({"distribution": "log_uniform", "min": -5, "max": 0}, math.exp(-5), 1.0),
        ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1}, 0.01, 1),
        ({"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 1}, 1, 1000),
        ({"distribution": "beta", "a": 2, "b": 5}, 0, 1),
        ({"distribution": "log_normal", "mu": 0, "sigma": 1}, 0, math.inf),
    ],
)
@pytest.mark.parametrize("method", ["random", "bayes"])
def test_each_wandb_distribution_stays_in_its_range(
    method: str, spec: dict[str, Any], low: float, high: float
) -> None:
    values = [p.params["x"] for p in walk(method, {"x": spec}, 25, lambda p: p["x"], seed=3)]
    assert len(values) == 25
    assert all(low <= v <= high for v in values), values
    if spec.get("distribution") == "int_uniform" or "q" in spec:
        q = spec.get("q", 1)
        assert all(isinstance(v, int) and v % q == 0 for v in values), values
    assert len(set(values)) > 2  # it searches, it does not repeat one point


def test_normal_and_weighted_values_follow_their_law() -> None:
    normal = [p.params["x"] for p in walk("random", {"x": {"distribution": "normal", "mu": 10,
                                                         "sigma": 2}}, 400, seed=1)]  # fmt: skip
    assert abs(statistics.mean(normal) - 10) < 0.5
    assert 1.5 < statistics.stdev(normal) < 2.5
    weighted = [
        p.params["x"]
        for p in walk(
            "random", {"x": {"values": ["a", "b"], "probabilities": [0.9, 0.1]}}, 300, seed=2
        )
    ]
    assert 0.8 < weighted.count("a") / len(weighted) < 0.97


def test_values_of_any_json_kind_come_back_as_given() -> None:
    odd = [{"layers": [64, 32]}, [1, 2], None, "$(rm -rf ~)"]
    seen = {repr(p.params["arch"]) for p in walk("random", {"arch": {"values": odd}}, 60, seed=4)}
    assert seen == {repr(v) for v in odd}
    bayes = walk("bayes", {"arch": {"values": odd}}, 15, lambda p: len(repr(p["arch"])), seed=4)
    assert all(p.params["arch"] in odd for p in bayes)


def test_malformed_parameters_are_refused_in_one_line() -> None:
    for bad in (
        {"x": {"min": 2, "max": 1}},
        {"x": {"values": []}},
        {"x": {"distribution": "gamma", "min": 1, "max": 2}},
        {"x": {"distribution": "log_uniform_values", "min": 0, "max": 1}},
        {"x": {"distribution": "normal", "sigma": -1}},
        {"x": {"values": [1, 2], "probabilities": [0.5, 0.6]}},
        {"x": 3},
        {},
    ):
        with pytest.raises(ConfigError) as info:
            search.check("random", bad)
        assert "\n" not in str(info.value)


def branin(p: dict[str, Any]) -> float:
    """A standard cheap test function (minimum 0.397887), x in [-5, 10], y in [0, 15]."""
    x, y = p["x"], p["y"]
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    return float(
        a * (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10
    )


def test_bayes_beats_random_over_the_same_budget() -> None:
    space = {"x": {"min": -5.0, "max": 10.0}, "y": {"min": 0.0, "max": 15.0}}
    budget, seeds = 40, range(6)
    best = {}
    for method in ("random", "bayes"):
        runs = [walk(method, space, budget, branin, seed=s) for s in seeds]
        assert all(len(r) == budget for r in runs)
        best[method] = statistics.mean(min(p.value or math.inf for p in r) for r in runs)
    # The gap from the optimum, averaged over the seeds: bayes at most half random's.
    optimum = 0.397887
    assert best["bayes"] - optimum < 0.5 * (best["random"] - optimum), best


def test_maximize_goal_searches_upwards() -> None:
    space = {"x": {"min": 0.0, "max": 1.0}}
    up = walk("bayes", space, 30, lambda p: p["x"], goal="maximize", seed=5)
    down = walk("bayes", space, 30, lambda p: p["x"], goal="minimize", seed=5)
    assert statistics.mean(p.params["x"] for p in up[15:]) > statistics.mean(
        p.params["x"] for p in down[15:]
    )


def test_a_rebuilt_search_continues_from_the_trials_it_is_given() -> None:
    """The scheduler's searcher keeps no trials: one built after a restart is told the
    trials the store holds (done, failed, in flight) and goes on from them, never
    repeating the first scheduler's picks; the same trials and seed give the same pick."""
    space = {"x": {"min": -5.0, "max": 10.0}, "y": {"min": 0.0, "max": 15.0}}
    params = search.check("bayes", space)
    first = walk("bayes", space, 12, branin, seed=7)
    history = [Past(p.params, p.value, True) for p in first]
    history[-1] = Past(history[-1].params, None, False)  # in flight
    history[-2] = Past(history[-2].params, None, True)  # failed
    again = search.propose("bayes", params, history, seed=7)
    assert again is not None and again not in [p.params for p in first]
    assert search.propose("bayes", params, history, seed=7) == again
    # And it still searches: 28 more trials after the restart reach near the optimum.
    searcher = search.Searcher("bayes", params, seed=7, start=len(history))
    for _ in range(28):
        proposal = searcher.propose(history)
        assert proposal is not None
        history.append(Past(proposal, branin(proposal), True))
    assert min(p.value for p in history if p.value is not None) < 2.0
