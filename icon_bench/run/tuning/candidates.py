"""Tuning's rules: the equal budget's candidates drawn from the `tune:` space, selection on val, ASHA's rungs.

A configuration is one grid cell (method, divergence, kernel and model overrides, dataset, seed).
Tuning it runs `budget` search trials on the validation split (the same number for every
configuration), each a stored row with status ``search``; the best on val is then run once on
the test split, and that final row records ``tune: {budget, spent, space, selected, metric}``.

What is deterministic: the sampled hyperparameters (drawn up front from ``tune.seed`` and the
cell's seed, so every configuration at one seed sees the same candidates, under any executor)
and, without a scheduler, the selection. An ASHA scheduler stops trials by comparing them with the
ones already reported, so under Ray with more than one trial at a time its decisions (and so the
selection) can depend on which trial finishes first; in process, trials run in order and the
same rule gives the same decisions on every run.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from icon_bench.run.suite.ids import canonical_json, config_id, normalize_spec
from icon_bench.run.suite.tune_block import DEFAULT_METRICS, Scheduler, Tune, is_number

__all__ = [
    "candidates",
    "default_metric",
    "Asha",
    "milestones",
    "rungs",
    "search_spec",
    "select",
    "tuned_config_id",
    "with_values",
]


def candidates(tune: Tune, cell_seed: int) -> list[dict[str, Any]]:
    """The `budget` hyperparameter settings searched for a configuration at `cell_seed` (key -> value).

    Random search draws from numpy's generator seeded by (tune.seed, cell_seed) only, so every
    configuration at one seed sees the same candidates (an equal, paired search) and local and Ray
    run the same ones; the lists' values are drawn without replacement (no candidate repeats one
    before the lists' grid is used up, and a space of lists only never repeats: its budget is at
    most the grid's size, checked at load). Grid takes the product of the choice lists, in the order written.
    """
    params = tune.params()
    if tune.algorithm == "grid":
        points = itertools.product(*(p.values for p in params))
        return [{p.key: copy.deepcopy(v) for p, v in zip(params, point)} for point in points][: tune.budget]
    rng = np.random.default_rng([int(tune.seed), int(cell_seed)])
    lists = [p for p in params if p.kind == "choice"]
    points = _distinct_points(rng, [len(p.values) for p in lists], tune.budget)
    out = []
    for point in points:
        # The lists' values without replacement (a point of their grid at most once per pass over
        # it), the ranges drawn as before: the same trial never runs twice in one search.
        values = {p.key: copy.deepcopy(p.values[i]) for p, i in zip(lists, point)}
        out.append({p.key: values[p.key] if p.kind == "choice" else p.sample(rng) for p in params})
    return out


def _distinct_points(rng: np.random.Generator, sizes: Sequence[int], count: int) -> list[tuple[int, ...]]:
    """`count` index tuples into a grid of `sizes`, each drawn without replacement until the grid is used up.

    Mixed-radix numbers in range(prod(sizes)): a grid no larger than the draws is permuted whole
    (then again, when ranges beside the lists make more draws meaningful); a larger one is sampled
    by rejection, which stays cheap because the load-time checks keep `count` small.
    """
    total = math.prod(sizes)
    numbers: list[int] = []
    while len(numbers) < count:
        left = count - len(numbers)
        if total <= 4 * left:
            numbers.extend(int(i) for i in rng.permutation(total)[:left])
            continue
        seen: set[int] = set()
        while len(seen) < left:
            # Python integers: a grid of lists can have more points than an int64 holds.
            n = int(rng.integers(1 << 62)) * (1 << 62) + int(rng.integers(1 << 62))
            n %= total
            if n not in seen:
                seen.add(n)
                numbers.append(n)
    points = []
    for n in numbers:
        point = []
        for size in reversed(sizes):
            n, i = divmod(n, size)
            point.append(i)
        points.append(tuple(reversed(point)))
    return points


def with_values(spec: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with dotted `values` set ("lr" -> settings.lr, "p.debias" -> p.debias), normalised."""
    out = copy.deepcopy(dict(spec))
    for key, value in values.items():
        prefix, rest = key.split(".", 1) if "." in key else ("settings", key)
        node = out.setdefault(prefix, {})
        *parents, last = rest.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return normalize_spec(out)


def search_spec(cell: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A search trial: the cell with `values`, trained on train and scored on the validation split."""
    return normalize_spec({**with_values(cell, values), "split": "val"})


def tuned_config_id(cell: Mapping[str, Any], tune: Tune) -> str:
    """The id of a tuned configuration: the cell without its seed, plus the tune block (16 hex).

    It differs from the cell's own config_id, so tuned rows never merge with rows at defaults, and
    it is the same for every seed, so a configuration's tuned rows aggregate although each seed may
    select other values.
    """
    text = canonical_json({"config": config_id(cell), "tune": tune.fingerprint()})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_metric(metrics: Sequence[str]) -> str | None:
    """The selection metric for a method reporting `metrics`: hungarian, knn2d or knn, else the first."""
    for name in DEFAULT_METRICS:
        if name in metrics:
            return name
    return metrics[0] if metrics else None


def milestones(max_epochs: int, scheduler: Scheduler) -> list[int]:
    """ASHA's rungs as Ray Tune computes them (grace * factor^k, k < log(max/grace)/log(factor) + 1)."""
    count = int(np.log(max_epochs / scheduler.grace_epochs) / np.log(scheduler.reduction_factor) + 1)
    return [int(scheduler.grace_epochs * scheduler.reduction_factor**k) for k in range(max(count, 0))]


def rungs(max_epochs: int, scheduler: Scheduler | None) -> list[int]:
    """Epoch counts a search trial is scored at: ASHA's milestones below max_epochs, then max_epochs."""
    if scheduler is None:
        return [int(max_epochs)]
    return sorted({m for m in milestones(max_epochs, scheduler) if m < max_epochs} | {int(max_epochs)})


class Asha:
    """ASHA's stopping rule (Li et al. 2020), as Ray Tune's AsyncHyperBandScheduler applies it.

    At each milestone a trial stops when its value is below the (1 - 1/factor) quantile of the
    values already recorded there. Run in process the trials arrive in order, so the decisions
    are the same on every run, and the same as Ray Tune's with one trial at a time.
    """

    def __init__(self, max_epochs: int, scheduler: Scheduler, higher: bool = True) -> None:
        self.factor = scheduler.reduction_factor
        self.sign = 1.0 if higher else -1.0
        self.recorded: dict[int, list[float]] = {m: [] for m in milestones(max_epochs, scheduler)}

    def keep(self, epochs: int, value: float | None) -> bool:
        """Record `value` at the milestone `epochs` (if it is one); False when the trial should stop."""
        recorded = self.recorded.get(epochs)
        if recorded is None or value is None:
            return value is not None
        reward = self.sign * value
        cutoff = np.nanpercentile(recorded, (1 - 1 / self.factor) * 100) if recorded else None
        recorded.append(reward)
        return cutoff is None or not reward < cutoff


def row_value(row: Mapping[str, Any], metric: str) -> float | None:
    """A search row's value of `metric` (None when missing or not finite)."""
    value = (row.get("metrics") or {}).get(metric)
    return float(value) if is_number(value) else None


def higher_is_better(rows: Sequence[Mapping[str, Any]], metric: str) -> bool:
    """The metric's declaration in the rows' protocol record (built-ins and most plugins: higher is better)."""
    for row in rows:
        kind = ((row.get("protocol") or {}).get("metrics") or {}).get(metric)
        if isinstance(kind, Mapping) and isinstance(kind.get("higher_is_better"), bool):
            return bool(kind["higher_is_better"])
    return True


def select(rows: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any] | None:
    """The best search row on `metric`; None when no row has the metric.

    Ties (equal values) go to the candidate with the smallest values, compared in the search space's
    key order (for a learning rate: the smallest), a rule that does not depend on the order the
    candidates were drawn in.
    """
    scored = [(row_value(r, metric), r) for r in rows]
    scored = [s for s in scored if s[0] is not None]
    if not scored:
        return None
    sign = -1.0 if higher_is_better(rows, metric) else 1.0
    best = min(sign * v for v, _ in scored)
    tied = [r for v, r in scored if sign * v <= best + 1e-12 * max(1.0, abs(best))]
    return min(tied, key=lambda r: _order_key((r.get("tune") or {}).get("values") or {}))


def _order_key(values: Mapping[str, Any]) -> tuple:
    """Candidate values as a sortable tuple: numbers before text, each compared in its own kind."""
    return tuple((0, float(v), "") if is_number(v) else (1, 0.0, json.dumps(v, sort_keys=True, default=str))
                 for v in values.values())


def resolution(rows: Sequence[Mapping[str, Any]], metric: str, best: Mapping[str, Any]) -> dict[str, Any] | None:
    """Whether the val split could tell the best candidate from the others: None when it could.

    A fraction metric on n validation rows moves in steps of 1 / n; candidates within one such step
    of the best (ties included) were not told apart. Returns ``{"candidates": k, "step": 1 / n,
    "n_val": n}`` (k counts the best) when k > 1.
    """
    value = row_value(best, metric)
    n_val = ((best.get("data") or {}).get("n_val") or (best.get("data") or {}).get("n_test"))
    if value is None or not n_val:
        return None
    step = 1.0 / float(n_val)
    close = [r for r in rows if (v := row_value(r, metric)) is not None and abs(v - value) < step - 1e-12]
    return {"candidates": len(close), "step": step, "n_val": int(n_val)} if len(close) > 1 else None


def final_spec(cell: Mapping[str, Any], selected: Mapping[str, Any]) -> dict[str, Any]:
    """The selected configuration, scored once on the test split (the spec's default split)."""
    return with_values({k: v for k, v in cell.items() if k != "split"}, selected)
