"""The discovery search: one Optuna TPE study per dataset, ASHA over epochs, every trial a stored row on val.

A study asks for a point (define-by-run, so a component's parameters are drawn only with it),
trains the base recipe with that loss at each ASHA rung until the rule stops it, stores the row
(status ``search``, its ``discover`` record) and tells the study the val value. Selection reads
val only: the rows' test split is never scored (the spec's split is ``val``).

Resumable: a rerun first replays the stored rows of a study into a fresh study in index order
(asking again with the same seeded sampler gives each stored point, as run/tuning/tpe.py does;
a point another Optuna version would draw differently is added as it was), then continues, so
each trial runs once. Diverged or collapsed trials are recorded with ``pruned`` saying so and told
to the study as pruned; a failed trial as failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from icon_bench import extras
from icon_bench.evaluation.health import COLLAPSED, DIVERGED
from icon_bench.run.suite.discover_space import Space, loss_name, loss_of
from icon_bench.run.execution.base import LoadFn, RunSummary, TrialFn, _dataset_key, _record, failed_row, run_one
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.discover_block import Discover
from icon_bench.run.suite.ids import canonical_json, config_id
from icon_bench.run.tuning.candidates import Asha, row_value, rungs
from icon_bench.run.tuning.plan import SEARCH, load_or_error, metric_higher, search_run
from icon_bench.run.tuning.tpe import objective

__all__ = ["Study", "pruned_reason", "run_studies", "search_rows"]


@dataclasses.dataclass
class Study:
    """One dataset's search: its id, the base cell (method, dataset, seed, settings) and the block it follows."""

    study_id: str
    cell: dict[str, Any]  # the base recipe's cell: method, dataset, seed (Suite.cell_to_spec reads it)
    block: Discover
    space: Space
    max_epochs: int

    @property
    def metric(self) -> str:
        return self.block.selection_metric()

    def spec(self, suite: Any, values: Mapping[str, Any], epochs: int | None = None) -> dict[str, Any]:
        """The search trial's spec: the base cell with the point's loss, on val, at `epochs` (None: the full budget)."""
        spec = suite.cell_to_spec({**self.cell, **self.space.cell(values)})
        spec["split"] = "val"
        if epochs is not None and epochs != self.max_epochs:
            spec["settings"] = {**spec.get("settings", {}), "epochs": int(epochs)}
        return spec

    def trial_id(self, index: int) -> str:
        return hashlib.sha256(f"{self.study_id}/{index}".encode()).hexdigest()[:16]


def study_id(suite: Any, block: Discover, space: Space, cell: Mapping[str, Any]) -> str:
    """What makes two searches the same search: the space, budget, base cell and settings, metric, scheduler, seed."""
    key = {"space": space.fingerprint(), "budget": block.budget, "cell": dict(cell), "settings": suite.settings,
           "metric": block.selection_metric(), "scheduler": block.scheduler.model_dump() if block.scheduler else None,
           "seed": block.seed}
    return "disc-" + hashlib.sha256(canonical_json(key).encode()).hexdigest()[:12]


def search_rows(rows: Sequence[Mapping[str, Any]], sid: str) -> list[dict[str, Any]]:
    """A study's stored search rows, the latest of each index, in index order."""
    by_index: dict[int, dict[str, Any]] = {}
    for row in rows:
        rec = row.get("discover") or {}
        if rec.get("role") == SEARCH and rec.get("study") == sid:
            by_index[int(rec["index"])] = dict(row)
    return [by_index[i] for i in sorted(by_index)]


def pruned_reason(row: Mapping[str, Any], stopped: bool) -> str | None:
    """Why a search trial does not count as complete: failed, diverged, collapsed, asha (stopped early), or None."""
    if row.get("status") not in ("ok", SEARCH):
        return "failed"
    said = " ".join(map(str, row.get("warnings") or []))
    if DIVERGED in said:
        return "diverged"
    if COLLAPSED in said:
        return "collapsed"
    return "asha" if stopped else None


def _sampler(block: Discover, sid: str) -> Any:
    optuna = extras.require("optuna", "discover")
    seed = int(np.random.SeedSequence([int(block.seed), int(sid[5:13], 16)]).generate_state(1)[0])
    with warnings.catch_warnings():  # multivariate/group TPE is marked experimental; it is what conditional spaces need
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, block.budget // 4), multivariate=True,
                                          group=True)


def _tell(study: Any, trial: Any, row: Mapping[str, Any], metric: str, higher: bool) -> None:
    optuna = extras.require("optuna", "discover")
    rec = row["discover"]
    value = objective(row, metric, higher)
    if rec.get("pruned") is None and value is not None:
        study.tell(trial, value)
        return
    for epochs, v in sorted((int(e), v) for e, v in (rec.get("rung_values") or {}).items()):
        if v is not None:
            trial.report(v if higher else -v, epochs)
    reported = any(v is not None for v in (rec.get("rung_values") or {}).values())
    failed = rec.get("pruned") == "failed" or not reported
    state = optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.PRUNED
    study.tell(trial, state=state)


def replay(study_def: Study, rows: Sequence[Mapping[str, Any]], higher: bool) -> tuple[Any, dict[str, Asha], Any]:
    """(study, ASHA rule, storage): the stored rows asked again in order and told, the rule fed their rung values."""
    optuna = extras.require("optuna", "discover")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(sampler=_sampler(study_def.block, study_def.study_id), direction="maximize",
                                storage=storage, study_name=study_def.study_id)
    asha = _asha(study_def, higher)
    space = study_def.space
    for row in rows:
        values = row["discover"]["values"]
        trial = study.ask()
        drawn = space.suggest(trial)
        if drawn != values:  # another Optuna drew it: keep the stored point as it was
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            value = objective(row, study_def.metric, higher)
            complete = row["discover"].get("pruned") is None and value is not None
            study.add_trial(optuna.trial.create_trial(
                params=space.optuna_params(values), distributions=space.distributions(values),
                value=value if complete else None,
                state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL))
        else:
            _tell(study, trial, row, study_def.metric, higher)
        for epochs, v in sorted((int(e), v) for e, v in (row["discover"].get("rung_values") or {}).items()):
            if asha is not None and epochs < study_def.max_epochs:
                asha.keep(epochs, v)
    return study, ({"rule": asha} if asha is not None else {}), storage


def _asha(study_def: Study, higher: bool) -> Asha | None:
    block = study_def.block
    return Asha(study_def.max_epochs, block.scheduler, higher) if block.scheduler is not None else None


def train_rungs(suite: Any, study_def: Study, values: Mapping[str, Any], data: Any, trial_fn: TrialFn | None,
                threads: int | None) -> Iterator[tuple[int, dict[str, Any], dict[str, float | None]]]:
    """(epochs, the trial's row, val values so far) at each ASHA rung, until the last, a failure or a divergence.

    Each rung trains from the start for its epochs (as run/tuning does): simple, and the same under
    both executors; whether a rung goes on is the caller's (ASHA in process, Ray Tune's scheduler on Ray).
    """
    block = study_def.block
    steps = rungs(study_def.max_epochs, block.scheduler) if block.scheduler else [study_def.max_epochs]
    rung_values: dict[str, float | None] = {}
    for epochs in steps:
        row = run_one(study_def.spec(suite, values, epochs), data, trial_fn, threads)
        rung_values[str(epochs)] = row_value(row, study_def.metric) if row.get("status") == "ok" else None
        yield epochs, row, dict(rung_values)
        if row.get("status") != "ok" or pruned_reason(row, False):
            return


def run_trial_at_rungs(suite: Any, study_def: Study, index: int, values: Mapping[str, Any], data: Any,
                       trial_fn: TrialFn | None, threads: int | None, asha: Asha | None) -> dict[str, Any]:
    """Train the point at each rung until ASHA stops it; the last rung's row with its `discover` record."""
    row: dict[str, Any] = {}
    rung_values: dict[str, float | None] = {}
    stopped = False
    for epochs, row, rung_values in train_rungs(suite, study_def, values, data, trial_fn, threads):
        value = rung_values[str(epochs)]
        if epochs < study_def.max_epochs and asha is not None and value is not None and not pruned_reason(row, False) \
                and not asha.keep(epochs, value):
            stopped = True
            break
    return annotate(row, study_def.spec(suite, values), study_def, index, values, rung_values, stopped)


def annotate(row: Mapping[str, Any], spec: Mapping[str, Any], study_def: Study, index: int,
             values: Mapping[str, Any], rung_values: Mapping[str, float | None], stopped: bool) -> dict[str, Any]:
    """A trial's row as a search row: its id, status search or failed, no artifacts, the `discover` record."""
    out = dict(row)
    pruned = pruned_reason(row, stopped)
    epochs = max((int(e) for e in rung_values), default=study_def.max_epochs)
    out["trial_id"] = study_def.trial_id(index)
    out["config_id"] = config_id(spec)  # the loss at its full epochs, whichever rung the row stopped at
    out["status"] = SEARCH if row.get("status") == "ok" else "failed"
    out["artifacts"] = None  # a search trial's embeddings are not kept; its val metrics are
    out["discover"] = {
        "role": SEARCH, "study": study_def.study_id, "task": study_def.block.task, "index": int(index),
        "values": dict(values), "loss": loss_of(values), "name": loss_name(values), "metric": study_def.metric,
        "value": row_value(row, study_def.metric) if row.get("status") == "ok" else None,
        "epochs": epochs, "max_epochs": study_def.max_epochs, "pruned": pruned,
        "rung_values": dict(rung_values), "higher_is_better": metric_higher(study_def.metric),
    }
    return out


def run_studies(
    suite: Any,
    pending: Sequence[tuple[Study, list[dict[str, Any]]]],
    store: ResultsStore,
    *,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    threads: int | None = None,
    progress: bool = True,
    base: str | os.PathLike[str] | None = None,
    out: Any = None,
) -> RunSummary:
    """Each study with its stored rows: replay, then ask, run, store, tell until its budget is spent."""
    total = sum(s.block.budget - len(rows) for s, rows in pending)
    base = os.fspath(base) if base is not None else os.getcwd()
    with search_run(total, progress, "discover (local, tpe)", out) as (summary, bar):
        for study_def, rows in pending:
            higher = metric_higher(study_def.metric)
            study, rule, _ = replay(study_def, rows, higher)
            asha = rule.get("rule")
            data, load_error = load_or_error(load_fn, _dataset_key(suite.cell_to_spec(study_def.cell), base)[1])
            for index in range(len(rows), study_def.block.budget):
                trial = study.ask()
                values = study_def.space.suggest(trial)
                spec = study_def.spec(suite, values)
                bar.start(spec, values={k: v for k, v in values.items()})
                if load_error is not None:
                    row = annotate(failed_row(spec, load_error), spec, study_def, index, values, {}, False)
                else:
                    row = run_trial_at_rungs(suite, study_def, index, values, data, trial_fn, threads, asha)
                _record(store, row, summary, bar)
                _tell(study, trial, row, study_def.metric, higher)
    return summary

