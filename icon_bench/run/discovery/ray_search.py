"""The discovery search on Ray Tune: one Tuner per study, Optuna's TPE through OptunaSearch, ASHA as its scheduler.

Each study is replayed from its stored rows first (search.replay), and OptunaSearch continues that
very study, one trial at a time (each TPE step depends on the values told before it), so a study's
points are the ones the in-process search draws. Tune trials run where the cluster has room; a
driver-side callback stores each trial's row as it ends, numbered in the order the trials started.

Two differences from the in-process search, both Ray Tune's: a trial ASHA stops is told to the
study as complete at its last rung (in process: as pruned), and an ASHA decision can depend on
which trial reports first when several run (here one runs at a time, so it does not).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from icon_bench.run.discovery.search import Study, annotate, replay, train_rungs
from icon_bench.run.execution.base import LoadFn, RunSummary, TrialFn, _dataset_key, _record, threads_for
from icon_bench.run.execution.progress import Progress
from icon_bench.run.execution.ray_executor import RayExecutor, _import_trial_stack, _ray_load
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.tuning.plan import metric_higher, search_run
from icon_bench.run.tuning.ray_tune import _ROW, _session
from icon_bench.run.tuning.tpe import objective

__all__ = ["run_studies_ray"]


def _safe(name: str) -> str:
    """Optuna's parameter name as a Ray Tune config key: Tune nests keys at dots and slashes."""
    return name.replace(".", "__")


class _Renamed:
    """An Optuna trial whose parameter names are Tune-safe (the space suggests under its own names)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(_safe(name), choices)

    def suggest_int(self, name: str, low: int, high: int) -> Any:
        return self.trial.suggest_int(_safe(name), low, high)

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> Any:
        return self.trial.suggest_float(_safe(name), low, high, log=log)


def _define(space: Any, trial: Any) -> None:
    """OptunaSearch's define-by-run space: the study's conditional draws, under Tune-safe names."""
    space.suggest(_Renamed(trial))


def _trainable(config: dict[str, Any], suite: Any, study_def: Study, refs: dict[str, Any], trial_fn: TrialFn | None,
               threads: int) -> None:
    """One Tune trial: the point OptunaSearch drew, trained at each rung, its row and objective reported."""
    import ray
    from ray import tune

    _import_trial_stack()
    names = {_safe(n): n for n in study_def.space.optuna_names()}
    values = study_def.space.values_of({names[k]: v for k, v in config.items() if k in names})
    data = ray.get(refs["data"])
    higher = metric_higher(study_def.metric)
    full = study_def.spec(suite, values)
    for epochs, row, rung_values in train_rungs(suite, study_def, values, data, trial_fn, threads):
        out = annotate(row, full, study_def, -1, values, rung_values, False)
        report: dict[str, Any] = {"epochs": int(epochs), _ROW: json.dumps(out, default=str)}
        value = objective(out, study_def.metric, higher)
        if value is not None:
            report["objective"] = value
        tune.report(report)


@functools.lru_cache(maxsize=1)
def _callback_class() -> type:
    """The row-storing callback, made on first use (subclassing tune.Callback imports Ray Tune)."""
    from ray import tune

    class _StoreSearchRows(tune.Callback):
        """Driver-side: each trial's latest row, numbered in start order, stored when the trial ends."""

        def __init__(self, study_def: Study, first_index: int, store: ResultsStore, summary: RunSummary,
                     bar: Progress) -> None:
            self.study_def, self.first_index, self.store, self.summary, self.bar = study_def, first_index, store, summary, bar
            self.latest: dict[str, dict[str, Any]] = {}
            self.started: dict[str, int] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.started.setdefault(trial.trial_id, self.first_index + len(self.started))

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if _ROW in result:
                self.latest[trial.trial_id] = json.loads(result[_ROW])

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            row = self.latest.pop(trial.trial_id, None)
            if row is None:
                return
            index = self.started.get(trial.trial_id, self.first_index)
            record = row["discover"]
            record["index"] = index
            if record["pruned"] is None and record["epochs"] < self.study_def.max_epochs:
                record["pruned"] = "asha"  # stopped by the scheduler before the last rung
            row["trial_id"] = self.study_def.trial_id(index)
            _record(self.store, row, self.summary, self.bar)

        on_trial_error = on_trial_complete

        def __getstate__(self) -> dict[str, Any]:
            return {}  # Tune pickles callbacks into its state; the store and bar stay in this process

    return _StoreSearchRows


def run_studies_ray(
    suite: Any,
    pending: Sequence[tuple[Study, list[dict[str, Any]]]],
    store: ResultsStore,
    *,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    executor: RayExecutor | None = None,
    progress: bool = True,
) -> RunSummary:
    """Each study on Ray Tune: the replayed study continued by OptunaSearch, ASHA when the block asks."""
    import ray
    from ray import tune as rt
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from icon_bench.extras import require

    require("optuna", "discover")
    from ray.tune.search.optuna import OptunaSearch

    executor = executor or RayExecutor(progress=progress)
    total = sum(s.block.budget - len(rows) for s, rows in pending)
    with search_run(total, progress, "discover (ray tune, tpe)", executor.out) as (summary, bar), _session(executor):
        base = os.fspath(executor.base) if executor.base is not None else os.getcwd()
        load_task = ray.remote(_ray_load).options(num_cpus=min(executor.cpus, 1.0), num_gpus=0)
        with tempfile.TemporaryDirectory(prefix="icon-bench-discover-") as storage_path:
            for study_def, rows in pending:
                refs = {"data": load_task.remote(load_fn, _dataset_key(suite.cell_to_spec(study_def.cell), base)[1])}
                study, _, storage = replay(study_def, rows, metric_higher(study_def.metric))
                search = ConcurrencyLimiter(
                    OptunaSearch(space=functools.partial(_define, study_def.space), metric="objective", mode="max",
                                 sampler=study.sampler, storage=storage, study_name=study.study_name),
                    max_concurrent=1,
                )
                scheduler = None
                if study_def.block.scheduler is not None:
                    scheduler = ASHAScheduler(time_attr="epochs", metric="objective", mode="max",
                                              max_t=study_def.max_epochs,
                                              grace_period=study_def.block.scheduler.grace_epochs,
                                              reduction_factor=study_def.block.scheduler.reduction_factor)
                trainable = rt.with_resources(
                    rt.with_parameters(_trainable, suite=suite, study_def=study_def, refs=refs, trial_fn=trial_fn,
                                       threads=threads_for(executor.cpus)),
                    {"cpu": executor.cpus, "gpu": executor.gpus},
                )
                callback = _callback_class()(study_def, len(rows), store, summary, bar)
                rt.Tuner(
                    trainable,
                    tune_config=rt.TuneConfig(search_alg=search, scheduler=scheduler,
                                              num_samples=study_def.block.budget - len(rows)),
                    run_config=rt.RunConfig(storage_path=storage_path, verbose=0, callbacks=[callback]),
                ).fit()
    return summary

