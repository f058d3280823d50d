"""The report's data model: `Section` and `Report`, the task groups and the metric-kind constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: The guess for rows that do not declare their metrics (evaluation.Metric.fraction / higher_is_better):
#: built-in metrics whose values are fractions, shown x100 with one decimal.
FRACTION_METRICS: frozenset[str] = frozenset(
    {"hungarian", "nmi", "ari", "linear_probe", "knn", "knn2d", "trustworthiness"}
)
#: Metric names (or name parts) for which a lower value is better; every other metric is maximised.
LOWER_IS_BETTER_PARTS: tuple[str, ...] = ("loss", "error", "time", "seconds", "_s")
#: Tasks of the cross-suite index and their metrics, the first present one deciding "best".
TASKS: dict[str, tuple[str, ...]] = {
    "clustering": ("hungarian", "nmi", "ari"),
    "representation": ("linear_probe", "knn"),
    "dimensionality reduction": ("knn2d", "trustworthiness"),
}
#: Spec keys that never make two configurations different in a way worth a column.
_LABEL_SKIP = ("seed", "evaluate")
METRIC_PREFIX = "metrics."
#: The kind of a row run at its configuration's defaults (not tuned); tuned rows say "tuned (budget B on val)".
DEFAULTS = "defaults"


@dataclass
class Section:
    """One leaderboard table: the configurations of one dataset under one protocol version and split."""

    protocol_version: str
    dataset: str  # the dataset's label (icon_bench.data.dataset_label)
    table: pd.DataFrame  # rows of `aggregate`, sorted by the primary metric (best first)
    metrics: list[str]  # metric names present, in evaluation order; metrics[0] is the primary one
    varying: list[str]  # flattened spec keys that differ between the configurations
    seeds: list[Any]  # every seed run for this dataset (ok or failed)
    task: str = ""  # what the table's metrics measure: clustering, representation, ...
    plots: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)
    split: str = "test"  # the split the metrics score: "test", or "val" (tuning runs)
    references: list[Any] = field(default_factory=list)  # matching published figures (report.references)
    # How the numbers were obtained: DEFAULTS, or "tuned (budget B on val)" (one table per tune block)
    kind: str = "defaults"
    tune: dict[str, Any] | None = None  # the tune block of a tuned table: budget, space, algorithm, metric, ...

    @property
    def tuned(self) -> bool:
        return self.tune is not None


@dataclass
class Report:
    """Everything the writers need: rows, aggregated sections, failures, and provenance."""

    rows: pd.DataFrame  # deduplicated rows, normalised columns (see `normalise_rows`)
    aggregated: pd.DataFrame  # `aggregate(rows)`
    sections: list[Section]
    failed: pd.DataFrame  # failed trials: trial_id, config_id, label, method, dataset, seed, error
    configs: dict[str, dict]  # config_id -> spec without seed
    protocols: dict[str, list[dict]]  # protocol version -> distinct settings seen
    # title, icon-bench versions, plugins, git commits, dates; fraction_metrics and lower_is_better (the
    # single answer to how each metric is shown and ranked, see `metric_kinds`)
    meta: dict[str, Any]
    results_dir: Path
    # ok trials whose loss diverged or whose output collapsed: trial_id, config_id, label, method,
    # dataset, seed, warnings (a list of "<kind>: <detail>")
    warned: pd.DataFrame = field(default_factory=pd.DataFrame)


    baseline: str | None = None  # what `comparisons` compares with, e.g. "divergence=kl"
    comparisons: pd.DataFrame | None = None  # report/compare.py:paired_comparisons on the table's first metric
    # Loss discovery: its rows, search ones included (report/discovered.py:discovery_rows), and the
    # Discovered section made from them (report/discovered_page.py:summarise; None without discovery)
    discovery: pd.DataFrame | None = None
    discovered: Any = None
