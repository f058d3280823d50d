"""Confirmation: the top K distinct losses of a study on val, rerun on test at fresh seeds beside the named methods.

A found loss is only a lucky draw until it holds on seeds the search never saw: each candidate
and each baseline (the task's named methods at their defaults, with the suite's settings) runs on
the test split at every confirmation seed, so each candidate pairs with each baseline seed by seed.
The verdicts (paired tests, Holm over the K candidates) are the report's (report/discovered.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from icon_bench.run.discovery.search import Study
from icon_bench.run.suite.discover_space import loss_name, loss_of
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.tuning.plan import SEARCH, metric_higher
from icon_bench.run.tuning.tpe import objective

__all__ = ["confirmation", "top_candidates"]


def top_candidates(study: Study, rows: Sequence[Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """The best `k` distinct losses on val among complete trials (not pruned), best first; ties to the earlier index.

    Reads each row's val value only: nothing of the test split exists for a search trial.
    """
    higher = metric_higher(study.metric)
    scored = []
    for row in rows:
        rec = row["discover"]
        value = objective(row, study.metric, higher)
        if row.get("status") == SEARCH and rec.get("pruned") is None and value is not None:
            scored.append((-value, int(rec["index"]), rec))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _, _, rec in sorted(scored, key=lambda s: (s[0], s[1])):
        name = loss_name(rec["values"])
        if name not in seen:
            seen.add(name)
            out.append(rec)
        if len(out) == k:
            break
    return out


def confirmation(suite: Any, study: Study, candidates: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict]:
    """(specs, trial_id -> discover record): each candidate and baseline at every confirmation seed, on test."""
    specs: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}
    block = study.block
    common = {"study": study.study_id, "task": block.task, "metric": study.metric}
    for seed in block.confirm.seed_list():
        for rank, rec in enumerate(candidates, 1):
            spec = suite.cell_to_spec({**study.cell, **study.space.cell(rec["values"]), "seed": seed})
            specs.append(spec)
            records[trial_id(spec)] = {**common, "role": "candidate", "rank": rank, "values": rec["values"],
                                       "loss": loss_of(rec["values"]), "name": loss_name(rec["values"]),
                                       "val_value": rec.get("value"), "index": rec.get("index"),
                                       "budget": block.budget}
        for method in block.baseline_methods():
            spec = suite.cell_to_spec({"dataset": study.cell["dataset"], "method": method, "seed": seed})
            specs.append(spec)
            records.setdefault(trial_id(spec), {**common, "role": "baseline", "method": method})
    return specs, records
