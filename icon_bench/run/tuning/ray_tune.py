"""Search trials on Ray Tune: one Tune trial per search trial, ASHA when the suite asks, rows stored as they finish.

The candidates are drawn up front (run/tuning/candidates.py), so Ray Tune runs the same search trials as the
local executor; its grid over candidate indices keeps that order. A driver-side callback appends
each finished trial's row to the results store at once, so a killed run keeps every finished
search trial. With ASHA, one Tuner per configuration and seed: the rule compares a trial only with
the other candidates of its own configuration, never across configurations.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from icon_bench.run.execution.base import (
    LoadFn,
    RunSummary,
    TrialFn,
    _dataset_key,
    _record,
    failed_row,
    run_one,
    threads_for,
)
from icon_bench.run.execution.interrupts import reclaim_sigterm
from icon_bench.run.execution.ray_cluster import ray_session
from icon_bench.run.execution.ray_executor import RayExecutor, _import_trial_stack, _ray_load
from icon_bench.run.execution.progress import Progress
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.tune_block import Tune
from icon_bench.run.tuning.candidates import higher_is_better, row_value
from icon_bench.run.tuning.plan import SEARCH, SearchItem, search_run

__all__ = ["run_search_ray"]

_ROW = "icon_bench_row"  # the result key that carries a rung's row (JSON text) to the driver


def _trainable(config: dict[str, Any], items: Any, refs: dict[str, Any], trial_fn: TrialFn | None,
               threads: int, scheduled: bool) -> None:
    """One Tune trial: train and score the item at each rung, reporting its val metric and its row.

    `items` is the list of search items (config holds an index into it) or, for TPE, the
    (configuration, tune, epochs, data key) the suggested values (config x0, x1, ...) complete.
    """
    import ray
    from ray import tune

    _import_trial_stack()
    item = items[config["index"]] if "index" in config else _tpe_item(config, items)
    data = ray.get(refs[item.info["data_key"]])  # a ref inside a dict is not resolved by Ray: fetch it here
    metric = item.info["metric"]
    for epochs in item.rungs:
        row = item.annotate(run_one(item.rung_spec(epochs), data, trial_fn, threads), epochs)
        row["tune"].pop("data_key", None)
        value = row_value(row, metric)
        report = {"epochs": int(epochs), _ROW: json.dumps(row, default=str)}
        if scheduled and value is not None:
            # ASHA (and TPE) maximise "objective": the value, negated for lower-is-better metrics. A
            # failed rung reports none (ASHA then records nothing, TPE marks it pruned) and ends the trial.
            report["objective"] = value if higher_is_better([row], metric) else -value
        tune.report(report)
        if row["status"] != SEARCH:
            return


def _tpe_item(config: dict[str, Any], context: Any) -> SearchItem:
    """A TPE trial's item from the values Optuna suggested; its index is set on the driver (trial order)."""
    from icon_bench.run.tuning.tpe import values_of
    from icon_bench.run.tuning.plan import item_for

    conf, tune_block, epochs, data_key = context
    item = item_for(conf, -1, values_of(config, tune_block), tune_block, epochs)
    item.info["data_key"] = data_key
    return item


def run_search_ray(
    items: Sequence[SearchItem],
    store: ResultsStore,
    *,
    tune: Tune,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    executor: RayExecutor | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run search trials as Ray Tune trials on the executor's cluster; rows reach the store as trials end."""
    import ray

    executor = executor or RayExecutor(progress=progress)
    if not items:
        return RunSummary(total=0)
    with search_run(len(items), progress, "search (ray tune)", executor.out) as (summary, bar), _session(executor):
        capacity = executor._capacity()
        base = os.fspath(executor.base) if executor.base is not None else os.getcwd()
        load_task = ray.remote(_ray_load).options(num_cpus=min(executor.cpus, 1.0), num_gpus=0)
        refs: dict[str, Any] = {}
        try:
            for item in items:
                key, ds_spec = _dataset_key(item.spec, base)
                item.info["data_key"] = key
                if key not in refs:
                    refs[key] = load_task.remote(load_fn, ds_spec)
            groups = _groups(items) if tune.scheduler is not None else [list(items)]
            with tempfile.TemporaryDirectory(prefix="icon-bench-tune-") as storage:
                for group in groups:
                    _fit(group, refs, store, summary, bar, tune, trial_fn, executor, capacity, storage)
        finally:
            for item in items:
                item.info.pop("data_key", None)
    return summary


def _session(executor: RayExecutor) -> contextlib.ExitStack:
    """The executor's Ray cluster, joined or started as RayExecutor.run does; close() leaves it.

    Tune's own chatter (experiment boxes, logger warnings, "wrote results" lines) is turned off:
    the rows and icon-bench's progress bar are the record, in the results store.
    """
    import logging

    # Ctrl-C must reach us as KeyboardInterrupt (Tune's own handler would end fit() as if it were done).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    stack = contextlib.ExitStack()
    stack.enter_context(ray_session(executor.address, log_to_driver=executor.log_to_driver, num_cpus=executor.num_cpus,
                                    num_gpus=executor.num_gpus, dashboard=executor.dashboard))
    reclaim_sigterm()  # ray.init's handler would exit with no summary
    return stack


def _groups(items: Sequence[SearchItem]) -> list[list[SearchItem]]:
    """Items by configuration and seed, in plan order: one ASHA rule (one Tuner) per group."""
    groups: dict[tuple[str, int], list[SearchItem]] = {}
    for item in items:
        groups.setdefault((item.info["configuration"], item.spec["seed"]), []).append(item)
    return list(groups.values())


def _fit(group: list[SearchItem], refs: dict[str, Any], store: ResultsStore, summary: RunSummary, bar: Progress,
         tune_block: Tune, trial_fn: TrialFn | None, executor: RayExecutor, capacity: int, storage: str) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if tune_block.scheduler is not None:
        scheduler = ASHAScheduler(
            time_attr="epochs", metric="objective", mode="max",
            max_t=group[0].rungs[-1], grace_period=tune_block.scheduler.grace_epochs,
            reduction_factor=tune_block.scheduler.reduction_factor,
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, items=group, refs=refs, trial_fn=trial_fn, threads=threads_for(executor.cpus),
            scheduled=scheduler is not None,
        ),
        {"cpu": executor.cpus, "gpu": executor.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(len(group))))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=min(capacity, len(group)) or 1),
        run_config=tune.RunConfig(
            storage_path=storage, verbose=0, callbacks=[_StoreRows(store, summary, bar)],
            failure_config=tune.FailureConfig(max_failures=executor.max_retries),
        ),
    )
    stored_before = len(summary.rows)
    tuner.fit()
    # A Tune trial whose worker died before it reported has no row: record it as a failed search trial.
    stored = {r["trial_id"] for r in summary.rows[stored_before:]}
    for item in group:
        if item.trial_id not in stored:
            row = item.annotate(failed_row(item.spec, "the Ray Tune trial ended without reporting a result"), item.rungs[0])
            row["tune"].pop("data_key", None)
            _record(store, row, summary, bar)


@functools.lru_cache(maxsize=1)
def _store_rows_class() -> type:
    """The callback class, made on first use: subclassing tune.Callback imports Ray Tune (seconds)."""
    from ray import tune

    class _StoreRows(tune.Callback):
        """Driver-side: keeps each Tune trial's latest row and appends it to the store when the trial ends."""

        def __init__(self, store: ResultsStore, summary: RunSummary, bar: Progress, first_index: int | None = None) -> None:
            self.store, self.summary, self.bar = store, summary, bar
            self.latest: dict[str, dict[str, Any]] = {}
            # TPE: candidates are numbered in the order their trials start (one at a time)
            self.first_index = first_index
            self.started: dict[str, int] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.first_index is not None:
                self.started.setdefault(trial.trial_id, self.first_index + len(self.started))

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if _ROW in result:
                self.latest[trial.trial_id] = json.loads(result[_ROW])

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            row = self.latest.pop(trial.trial_id, None)
            if row is not None:
                if trial.trial_id in self.started:
                    row["tune"]["index"] = self.started[trial.trial_id]
                _record(self.store, row, self.summary, self.bar)

        on_trial_error = on_trial_complete

        def __getstate__(self) -> dict[str, Any]:
            # Tune pickles its callbacks into the experiment state; the store, summary and progress bar
            # (threads, locks) stay with this process, where the callback runs.
            return {}

    return _StoreRows


def _StoreRows(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - used like the class it makes
    return _store_rows_class()(*args, **kwargs)


def run_tpe_ray(
    pending: Sequence[tuple[Any, list[dict[str, Any]], int]],
    store: ResultsStore,
    *,
    tune: Tune,
    higher: dict[str, bool],
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    executor: RayExecutor | None = None,
    progress: bool = True,
) -> RunSummary:
    """TPE on Ray Tune: per configuration one Tuner, OptunaSearch on the replayed study, one trial at a time."""
    import ray
    from ray import tune as rt
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from icon_bench.extras import require

    require("optuna", "tpe")  # Ray's OptunaSearch needs it; say which extra brings it
    from ray.tune.search.optuna import OptunaSearch

    from icon_bench.run.tuning.tpe import distributions, replay

    executor = executor or RayExecutor(progress=progress)
    total = sum(tune.budget - len(rows) for _, rows, _ in pending)
    with search_run(total, progress, "search (ray tune, tpe)", executor.out) as (summary, bar), _session(executor):
        base = os.fspath(executor.base) if executor.base is not None else os.getcwd()
        load_task = ray.remote(_ray_load).options(num_cpus=min(executor.cpus, 1.0), num_gpus=0)
        with tempfile.TemporaryDirectory(prefix="icon-bench-tune-") as storage_path:
            for conf, rows, epochs in pending:
                key, ds_spec = _dataset_key(conf.cell, base)
                refs = {key: load_task.remote(load_fn, ds_spec)}
                study, storage, name = replay(tune, conf, rows, higher[conf.tuned_id])
                search = ConcurrencyLimiter(
                    OptunaSearch(space=distributions(tune.params()), metric="objective", mode="max",
                                 sampler=study.sampler, storage=storage, study_name=name),
                    max_concurrent=1,
                )
                scheduler = None
                if tune.scheduler is not None:
                    scheduler = ASHAScheduler(time_attr="epochs", metric="objective", mode="max", max_t=max(epochs, 1),
                                              grace_period=tune.scheduler.grace_epochs,
                                              reduction_factor=tune.scheduler.reduction_factor)
                trainable = rt.with_resources(
                    rt.with_parameters(_trainable, items=(conf, tune, epochs, key), refs=refs, trial_fn=trial_fn,
                                       threads=threads_for(executor.cpus), scheduled=True),
                    {"cpu": executor.cpus, "gpu": executor.gpus},
                )
                callback = _StoreRows(store, summary, bar, first_index=len(rows))
                rt.Tuner(
                    trainable,
                    tune_config=rt.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=tune.budget - len(rows)),
                    run_config=rt.RunConfig(storage_path=storage_path, verbose=0, callbacks=[callback]),
                ).fit()
    return summary
