"""A suite's `discover:` block as written: the task, the budget, the space over losses, the confirmation.

Loss discovery searches the I-Con space (p kernel, q kernel, divergence, their parameters, the
learning rate) for one task, with the same budget on every dataset, selects on val only, and then
reruns the top candidates on test with fresh seeds beside the task's named methods. This module is
the block's schema; which components fit the task comes from their own `discovery` declarations
(run/suite/discover_space.py), and load_checks.check_discover checks the block with file:line errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from icon_bench.run.suite.tune_block import NumbersNotBooleans, Scheduler

__all__ = ["BASES", "BASELINES", "Confirm", "Discover", "METRICS", "TASK_WORDS"]

#: The recipe whose model and settings a searched loss replaces p, q and divergence of, per task.
BASES: dict[str, str] = {"clustering": "pmi", "representation": "simclr", "2d": "tsne"}
#: The named methods each found loss is confirmed against (the issue's list), per task.
BASELINES: dict[str, tuple[str, ...]] = {
    "clustering": ("pmi", "debiased_infonce_clustering", "kmeans"),
    "representation": ("simclr", "supcon"),
    "2d": ("sne", "tsne"),
}
#: The selection metric on val, per task (the task's headline metric).
METRICS: dict[str, str] = {"clustering": "hungarian", "representation": "knn", "2d": "knn2d"}
#: Words users write for the tasks.
TASK_WORDS: dict[str, str] = {"2-d": "2d", "2D": "2d", "dimensionality_reduction": "2d",
                              "dimensionality reduction": "2d", "contrastive": "representation"}
#: The space's defaults beyond the declared components: the learning rate and I-Con's debiasing.
DEFAULT_EXTRA: dict[str, Any] = {
    "lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "p.debias": {"uniform": [0.0, 0.8]},
    "q.debias": {"uniform": [0.0, 0.8]},
}


class Confirm(NumbersNotBooleans):
    """How found losses are confirmed: the top K by val, rerun on test at fresh seeds the search never used."""

    model_config = ConfigDict(extra="forbid")
    top: int = Field(3, ge=1, le=20, description="candidates confirmed (the best K distinct losses on val)",
                     examples=[3])
    seeds: int | list[int] = Field(5, description="fresh seeds: N means 1000..1000+N-1, or a list; none may be a "
                                   "search seed", examples=[[100, 101, 102, 103, 104]])

    def seed_list(self) -> list[int]:
        return list(range(1000, 1000 + self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class Discover(NumbersNotBooleans):
    """The `discover:` block of a suite (checked further, with line numbers, in load_checks.check_discover)."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["clustering", "representation", "2d"] = Field(
        description="what is searched for: clustering, representation (contrastive) or 2d (maps)",
        examples=["clustering"])
    budget: int = Field(ge=2, description="search trials per dataset, the same for every dataset", examples=[30])
    space: dict[str, Any] = Field(
        default_factory=dict,
        description="p / q / divergence: lists of component names (or {name: {param: range}}); null: every "
        "component declared for the task. Other keys (lr, p.debias, q.debias, p.propagate, settings) take tune "
        "space ranges; lr, p.debias and q.debias are searched unless set here (null drops one)",
        examples=[{"q": ["cluster"], "divergence": ["kl", "tv", "alpha", "mixture"],
                   "lr": {"loguniform": [1.0e-4, 1.0e-2]}}],
    )
    base: str | None = Field(None, description="the recipe whose model and settings each loss uses; null: pmi "
                             "(clustering), simclr (representation), tsne (2d)", examples=["pmi"])
    baselines: list[str] | None = Field(
        None, description="named methods each found loss is compared with on test; null: the task's (clustering: "
        "pmi, debiased_infonce_clustering, kmeans; representation: simclr, supcon; 2d: sne, tsne)",
        examples=[["pmi", "kmeans"]])
    metric: str | None = Field(None, description="selection metric on val; null: hungarian, knn or knn2d by task",
                               examples=["nmi"])
    scheduler: Scheduler | None = Field(None, description="ASHA over epochs (the fidelity); see Tune scheduler",
                                        examples=["asha"])
    seed: int = Field(0, description="seeds the search (TPE), with each dataset", examples=[1])
    confirm: Confirm = Field(default_factory=Confirm, description="see Discover confirm")

    @field_validator("task", mode="before")
    @classmethod
    def _task_word(cls, value: Any) -> Any:
        return TASK_WORDS.get(value, value) if isinstance(value, str) else value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def base_method(self) -> str:
        return self.base or BASES[self.task]

    def baseline_methods(self) -> list[str]:
        return list(self.baselines) if self.baselines is not None else list(BASELINES[self.task])

    def selection_metric(self) -> str:
        return self.metric or METRICS[self.task]
