"""A suite's `tune:` block: search space, equal budget per configuration, seeded sampling, selection on val.

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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from icon_bench.run.ids import canonical_json, config_id, normalize_spec

__all__ = [
    "DEFAULT_METRICS",
    "Param",
    "Scheduler",
    "Tune",
    "candidates",
    "default_metric",
    "parse_param",
    "Asha",
    "milestones",
    "rungs",
    "search_spec",
    "select",
    "tuned_config_id",
    "with_values",
]

#: The selection metric each task defaults to (issue 12): the first of these a method reports.
DEFAULT_METRICS: tuple[str, ...] = ("hungarian", "knn2d", "knn")
#: Space keys that name a grid cell rather than a hyperparameter.
_NOT_TUNABLE = ("method", "dataset", "divergence", "seed", "evaluate", "split")
_DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


class NumbersNotBooleans(BaseModel):
    """A suite block whose number fields refuse `true` / `false` (pydantic's lax mode reads them as 1 / 0).

    `seeds: true`, `resources: {cpus: true}` or `tune: {budget: true}` loaded as 1 without a word.
    """

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            try:
                TypeAdapter(annotation).validate_python(value, strict=True)
            except ValidationError:
                raise ValueError("expected a number, not a boolean") from None
        return value


class Scheduler(NumbersNotBooleans):
    """Early stopping of search trials: ASHA over epochs (rungs at grace_epochs * reduction_factor^k)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["asha"] = Field("asha", description="the scheduler: asha (also written `scheduler: asha`)")
    grace_epochs: int = Field(1, ge=1, description="epochs of the first rung", examples=[2])
    reduction_factor: int = Field(3, ge=2, description="rungs at grace x factor^k epochs; the top 1/factor go on",
                                  examples=[3])


class Tune(NumbersNotBooleans):
    """The `tune:` block of a suite (validated further, with line numbers, in suite_file)."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(ge=1, description="search trials per configuration and seed, the same for every one",
                        examples=[8])
    space: dict[str, Any] = Field(
        description="grid-style keys (trainer settings, p.X, q.X, model.X) -> a list of values, or "
        "{uniform | loguniform | randint: [low, high]} (randint's high included)",
        examples=[{"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "p.debias": [0.0, 0.3, 0.6]}],
    )
    algorithm: Literal["random", "grid", "tpe"] = Field(
        "random", description="random (drawn from the seed; list values without replacement), grid (lists only; "
        "budget = its size), tpe (Optuna)",
        examples=["tpe"],
    )
    scheduler: Scheduler | None = Field(None, description="early stopping of search trials; see Tune scheduler",
                                        examples=["asha"])
    metric: str | None = Field(None, description="selection metric on val; null: hungarian, else knn2d, else knn "
                               "among the method's metrics", examples=["nmi"])
    seed: int = Field(0, description="seeds the candidates (with each cell's seed)", examples=[1])
    defaults: bool = Field(False, description="also run every cell once at its defaults (a \"defaults\" table)",
                           examples=[True])

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def params(self) -> list[Param]:
        """The space as parameters, in the order written (checked at load time, so this does not raise)."""
        return [parse_param(key, value) for key, value in self.space.items()]

    def fingerprint(self) -> dict[str, Any]:
        """What makes two tuned results comparable: budget, space, algorithm, scheduler, metric, seed."""
        return {
            "budget": self.budget,
            "space": {p.key: p.describe() for p in self.params()},
            "algorithm": self.algorithm,
            "scheduler": self.scheduler.model_dump() if self.scheduler else None,
            "metric": self.metric,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Param:
    """One hyperparameter's search domain: a list of choices, uniform, log-uniform or an integer range."""

    key: str  # a dotted spec key as in grid: "lr", "p.debias", "model.hidden", "q.temperature"
    kind: str  # "choice" | "uniform" | "loguniform" | "randint"
    values: tuple[Any, ...]  # the choices, or (low, high); randint's high is included

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])
        low, high = self.values
        if self.kind == "uniform":
            return float(rng.uniform(low, high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return int(rng.integers(low, high + 1))

    def describe(self) -> Any:
        """The domain as written back (a list, or {kind: [low, high]}), for rows and report headers."""
        return list(self.values) if self.kind == "choice" else {self.kind: list(self.values)}


def parse_param(key: str, value: Any) -> Param:
    """A space entry as a Param; ValueError with a short message naming what is wrong (suite_file adds file:line)."""
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list of choices")
        return Param(key, "choice", tuple(value))
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(
            f"expected a list of values or one of {{uniform, loguniform, randint, choice}}: [low, high], got {value!r}"
        )
    (kind, bounds), = value.items()
    if kind not in _DISTRIBUTIONS:
        from icon_bench.errors import did_you_mean

        hint = did_you_mean(str(kind), _DISTRIBUTIONS)
        raise ValueError(
            f"unknown distribution {kind!r} (uniform, loguniform, randint, choice)"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    if kind == "choice":
        return parse_param(key, bounds if isinstance(bounds, list) else [bounds])
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)):
        raise ValueError(f"{kind} takes [low, high], two numbers, got {bounds!r}")
    low, high = bounds
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise ValueError(f"randint takes two integers [low, high] (high included), got {bounds!r}")
    if not low < high:
        raise ValueError(f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform needs low > 0, got {low}")
    return Param(key, kind, (low, high) if kind == "randint" else (float(low), float(high)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def space_key_error(key: str) -> str | None:
    """Why `key` cannot be tuned, or None: grid cells (method, dataset, ...) are not hyperparameters."""
    head = key.split(".", 1)[0]
    if head in _NOT_TUNABLE:
        return f"{head!r} names a configuration, not a hyperparameter; put it under grid (tune searches within a cell)"
    return None


def grid_size(params: Sequence[Param]) -> int | None:
    """Points of the full grid over `params` (None when one of them is continuous)."""
    if any(p.kind != "choice" for p in params):
        return None
    return math.prod(len(p.values) for p in params)


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
    return float(value) if _is_number(value) else None


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
    return tuple((0, float(v), "") if _is_number(v) else (1, 0.0, json.dumps(v, sort_keys=True, default=str))
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
