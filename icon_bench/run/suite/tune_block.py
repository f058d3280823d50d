"""A suite's `tune:` block as written: the budget, the search space's parameters, the scheduler, the selection metric.

The block is suite language (validated with line numbers in reader.py); drawing candidates from it,
selection and ASHA's rungs are in run/tuning/candidates.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

__all__ = ["DEFAULT_METRICS", "NumbersNotBooleans", "Param", "Scheduler", "Tune", "grid_size", "is_number", "parse_param",
           "space_key_error"]

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
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(is_number(b) for b in bounds)):
        raise ValueError(f"{kind} takes [low, high], two numbers, got {bounds!r}")
    low, high = bounds
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise ValueError(f"randint takes two integers [low, high] (high included), got {bounds!r}")
    if not low < high:
        raise ValueError(f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform needs low > 0, got {low}")
    return Param(key, kind, (low, high) if kind == "randint" else (float(low), float(high)))


def is_number(value: Any) -> bool:
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
