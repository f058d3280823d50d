"""A suite with a `discover:` block: its studies (one per dataset), the search on val, then the confirmation on test."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TextIO

from icon_bench.run.discovery.confirm import confirmation, top_candidates
from icon_bench.run.discovery.search import Study, run_studies, search_rows, study_id
from icon_bench.run.suite.discover_space import build_space
from icon_bench.run.execution.base import LoadFn, RunSummary, TrialFn
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.tuning.plan import FinalTrial, _max_epochs
from icon_bench.run.tuning.search import TunedRun

__all__ = ["plan_studies", "run_discover"]


def plan_studies(suite: Any) -> list[Study]:
    """One study per dataset: the base recipe's cell at the suite's (single) search seed."""
    block = suite.discover
    space = build_space(block)
    seed = int(list(suite._seeds())[0])
    studies = []
    for dataset in suite.dataset_values():
        cell = {"method": block.base_method(), "dataset": dataset, "seed": seed}
        spec = suite.cell_to_spec(cell)
        studies.append(Study(study_id(suite, block, space, spec), cell, block, space, _max_epochs(spec)))
    return studies


def describe(suite: Any, studies: list[Study], done: int) -> str:
    block = suite.discover
    k, seeds, base = block.confirm.top, len(block.confirm.seed_list()), len(block.baseline_methods())
    total = block.budget * len(studies)
    return (f"discover {block.task} losses: {len(studies)} dataset(s) x budget {block.budget} = {total} search trials "
            f"on val ({done} done), selected on {block.selection_metric()}; then the top {k} and {base} named "
            f"method(s) x {seeds} fresh seeds on test ({(k + base) * seeds * len(studies)} trials)")


def run_discover(
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
    """Search each study to its budget (resumable), then run what the confirmation still lacks.

    Under `--executor ray` the search runs on Ray Tune (run/discovery/ray_search.py) and the
    confirmation's trials spread over the cluster; under `local` both run in this process. `limit`
    is not used: a study's budget is what makes datasets comparable.
    """
    from icon_bench.run.execution.executors import make_executor

    studies = plan_studies(suite)
    rows = store.rows()
    stored = {s.study_id: search_rows(rows, s.study_id) for s in studies}
    done = sum(min(len(r), suite.discover.budget) for r in stored.values())
    print(f"suite {suite.name!r} ({suite.source}): {describe(suite, studies, done)}", file=out, flush=True)
    if dry_run:
        return TunedRun(finished=False)
    if suite.fail_on_warnings:
        from icon_bench.run.execution.trial import fail_on_warnings

        trial_fn = functools.partial(fail_on_warnings, trial_fn)
    runner = make_executor(kind, address=address, cpus=suite.resources.cpus, gpus=suite.resources.gpus,
                           progress=progress, base=suite.root, out=out, **executor_kwargs)
    pending = [(s, stored[s.study_id]) for s in studies if len(stored[s.study_id]) < s.block.budget]
    if pending:
        if kind == "ray":
            from icon_bench.run.discovery.ray_search import run_studies_ray

            summary = run_studies_ray(suite, pending, store, trial_fn=trial_fn, load_fn=load_fn, executor=runner,
                                      progress=progress)
        else:
            summary = run_studies(suite, pending, store, trial_fn=trial_fn, load_fn=load_fn,
                                  threads=getattr(runner, "threads", None), progress=progress, base=suite.root, out=out)
        summarise(summary)
        if summary.interrupted or summary.store_error:
            return TunedRun(finished=False, summary=summary)
        rows = store.rows()
    return _confirm(suite, studies, rows, store, runner, out, summarise, trial_fn, load_fn, force, retry_failed)


def _confirm(suite: Any, studies: list[Study], rows: list[dict[str, Any]], store: ResultsStore, runner: Any,
             out: TextIO, summarise: Callable[[RunSummary], None], trial_fn: TrialFn | None, load_fn: LoadFn | None,
             force: bool, retry_failed: bool) -> TunedRun:
    latest = {r["trial_id"]: r for r in rows}
    specs: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}
    for study in studies:
        found = top_candidates(study, search_rows(rows, study.study_id), study.block.confirm.top)
        if not found:
            print(f"no candidate to confirm on {study.cell['dataset']!r}: no search trial completed on val", file=out)
            continue
        more, recs = confirmation(suite, study, found)
        records.update(recs)
        for spec in more:
            row = latest.get(trial_id(spec))
            status = (row or {}).get("status")
            if force or row is None or (retry_failed and status != "ok") or ((row or {}).get("discover") is None):
                specs.append(spec)
    if not specs:
        print(f"nothing left to run: every confirmation trial is done; rows in {store.path}", file=out)
        return TunedRun(finished=True)
    print(f"confirming: {len(specs)} trial(s) on test at fresh seeds", file=out, flush=True)
    summary = runner.run(specs, store, trial_fn=FinalTrial(trial_fn, records, key="discover"), load_fn=load_fn)
    summarise(summary)
    return TunedRun(finished=not (summary.interrupted or summary.store_error), failed=summary.failed, summary=summary)
