"""A tuned suite's run: the search on val (in process or on Ray Tune, drawn candidates or TPE), then each selection on test."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TextIO

from icon_bench.run.execution.base import LoadFn, RunSummary, TrialFn
from icon_bench.run.tuning.ray_tune import run_search_ray, run_tpe_ray
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.tuning.tpe import run_tpe_local
from icon_bench.run.tuning.plan import TunePlan, metric_higher, run_search_local

__all__ = ["TunedRun", "run_search", "run_tuned"]


def run_search(
    plan: TunePlan,
    store: ResultsStore,
    kind: str,
    executor: Any,
    *,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> RunSummary:
    """The plan's search trials (at most `limit`; TPE ignores it) on the local executor or on Ray Tune."""
    tune, threads = plan.tune, getattr(executor, "threads", None)
    where = {"base": getattr(executor, "base", None), "out": getattr(executor, "out", None)}  # the suite's root
    if tune.algorithm == "tpe":
        higher = {tid: metric_higher(m) for tid, m in plan.metric_of.items()}
        if kind == "ray":
            return run_tpe_ray(plan.tpe_pending, store, tune=tune, higher=higher, trial_fn=trial_fn, load_fn=load_fn,
                               executor=executor, progress=progress)
        return run_tpe_local(plan.tpe_pending, store, tune=tune, higher=higher, trial_fn=trial_fn, load_fn=load_fn,
                             threads=threads, progress=progress, **where)
    items = plan.to_search if limit is None else plan.to_search[: max(limit, 0)]
    if kind == "ray":
        return run_search_ray(items, store, tune=tune, trial_fn=trial_fn, load_fn=load_fn, executor=executor,
                              progress=progress)
    return run_search_local(items, store, tune=tune, trial_fn=trial_fn, load_fn=load_fn, threads=threads,
                            progress=progress, **where)


@dataclasses.dataclass
class TunedRun:
    """How a tuned run ended: whether it got to the end (a report may follow) and its last phase's summary."""

    finished: bool
    failed: int = 0
    summary: RunSummary | None = None

    @property
    def interrupted(self) -> bool:
        return bool(self.summary and (self.summary.interrupted or self.summary.store_error))


def run_tuned(
    suite: Any,
    store: ResultsStore,
    out: TextIO,
    summarise: Callable[[RunSummary], None],
    *,
    kind: str,
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    limit: int | None = None,
    address: str | None = None,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = True,
    **executor_kwargs: Any,
) -> TunedRun:
    """Search trials on val (resumable), then each selected configuration (and tune.defaults' cells) once on test.

    `summarise` prints a phase's rows. Not finished after a dry run, an interrupt, a store failure or
    a --limit that left search trials for later.
    Reason: the two phases and what ends each read best in order; each step is a call into tuning.py.
    """
    from icon_bench.run.execution.executors import make_executor
    from icon_bench.run.tuning.plan import FinalTrial, finals, plan_tuning

    plan = plan_tuning(suite, store, force=force, retry_failed=retry_failed)
    todo = plan.n_to_search
    n_run = todo if limit is None or plan.tune.algorithm == "tpe" else min(todo, max(limit, 0))
    print(f"suite {suite.name!r} ({suite.source}): {plan.describe(n_run)}", file=out, flush=True)
    if dry_run:
        return TunedRun(finished=False)
    if suite.fail_on_warnings:
        from icon_bench.run.execution.trial import fail_on_warnings

        trial_fn = functools.partial(fail_on_warnings, trial_fn)
    runner = make_executor(kind, address=address, cpus=suite.resources.cpus, gpus=suite.resources.gpus,
                           progress=progress, base=suite.root, out=out, **executor_kwargs)
    if todo:
        summary = run_search(plan, store, kind, runner, trial_fn=trial_fn, load_fn=load_fn, progress=progress,
                             limit=limit)
        summarise(summary)
        if summary.interrupted or summary.store_error:
            return TunedRun(finished=False, summary=summary)
        if n_run < todo:
            print(f"--limit: {todo - n_run} search trials left for the next run", file=out)
            # Failed search trials count under --limit too: the exit status says so (README, exit codes).
            return TunedRun(finished=False, failed=summary.failed, summary=summary)
        defaults = plan.defaults
        plan = plan_tuning(suite, store)  # the search trials just stored (TPE: their candidates too)
        plan.defaults = defaults
    rows = {r["trial_id"]: r for r in store.rows()}
    specs, records, empty = finals(plan, rows, force=force)
    for row in empty:
        if force or retry_failed or row["trial_id"] not in rows:
            store.append(row)
            print(f"no selection: {row['error']} ({row['method']}, seed {row['seed']})", file=out)
    to_run = specs + plan.defaults
    if not to_run:
        selected = sum(1 for r in rows.values() if r.get("status") == "ok" and r.get("tune") and r.get("split") != "val")
        if empty and not selected:
            print(f"nothing selected: no configuration's search gave a value to select on ({len(empty)} without a "
                  f"selection; their search rows say why); rows in {store.path}", file=out)
        else:
            print(f"nothing left to run: every selected configuration is done; rows in {store.path}", file=out)
        return TunedRun(finished=True, failed=len(empty))
    print(f"running {len(specs)} selected configuration(s) on test"
          + (f" and {len(plan.defaults)} at defaults" if plan.defaults else ""), file=out, flush=True)
    summary = runner.run(to_run, store, trial_fn=FinalTrial(trial_fn, records), load_fn=load_fn)
    summarise(summary)
    done = not (summary.interrupted or summary.store_error)
    return TunedRun(finished=done, failed=summary.failed + len(empty), summary=summary)
