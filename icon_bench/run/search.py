"""Which engine runs a tuned suite's search: in process or on Ray Tune, drawn candidates or TPE."""

from __future__ import annotations

from typing import Any

from icon_bench.run.execution import LoadFn, RunSummary, TrialFn
from icon_bench.run.ray_tune import run_search_ray, run_tpe_ray
from icon_bench.run.store import ResultsStore
from icon_bench.run.tpe import run_tpe_local
from icon_bench.run.tuning import TunePlan, metric_higher, run_search_local

__all__ = ["run_search"]


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
    if tune.algorithm == "tpe":
        higher = {tid: metric_higher(m) for tid, m in plan.metric_of.items()}
        if kind == "ray":
            return run_tpe_ray(plan.tpe_pending, store, tune=tune, higher=higher, trial_fn=trial_fn, load_fn=load_fn,
                               executor=executor, progress=progress)
        return run_tpe_local(plan.tpe_pending, store, tune=tune, higher=higher, trial_fn=trial_fn, load_fn=load_fn,
                             threads=threads, progress=progress)
    items = plan.to_search if limit is None else plan.to_search[: max(limit, 0)]
    if kind == "ray":
        return run_search_ray(items, store, tune=tune, trial_fn=trial_fn, load_fn=load_fn, executor=executor,
                              progress=progress)
    return run_search_local(items, store, tune=tune, trial_fn=trial_fn, load_fn=load_fn, threads=threads,
                            progress=progress)
