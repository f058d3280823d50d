"""`icon-bench run`: suite -> plan (what is done, what will run) -> executor -> results store -> summary (-> report)."""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from icon_bench.errors import StoreError
from icon_bench.run.execution.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, interrupted, stops_on_sigterm
from icon_bench.run.suite.limits import MAX_CELLS, limits_environment
from icon_bench.run.execution.lock import RunLocked, holder, is_locked, results_lock
from icon_bench.run.execution.summary import print_failures, print_plan, print_store_failure, print_summary

if TYPE_CHECKING:  # the run machinery (pydantic, numpy, ...) loads when a run starts, not for --help
    from icon_bench.run.execution.base import LoadFn, RunSummary, TrialFn
    from icon_bench.run.execution.store import ResultsStore
    from icon_bench.run.suite.model import Suite

__all__ = ["EXIT_CODES", "print_failures", "print_summary", "run_suite"]

EXIT_OK, EXIT_FAILED, EXIT_STORE, EXIT_LOCKED, EXIT_REPORT = 0, 1, 3, 4, 5
#: `icon-bench run` exit statuses (2 is any other error: a bad suite, an unknown name, bad options).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "every trial ok (or nothing to run)",
    EXIT_FAILED: "some trials failed (their rows are stored; --retry-failed reruns them)",
    EXIT_STORE: "the results store could not be written; the sweep stopped, finished rows kept in a fallback",
    EXIT_LOCKED: "another run is writing the same results folder (--wait waits for it)",
    EXIT_REPORT: "the trials ran but the report could not be written (none of it is left behind)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C / SIGINT (finished rows are kept; rerun to resume)",
    EXIT_TERMINATED: "terminated by SIGTERM, handled as Ctrl-C (summary printed, finished rows kept)",
}


def _plan() -> Any:
    """run/execution/plan.py, imported when a plan is made (it loads the store and the suite schema)."""
    from icon_bench.run.execution import plan

    return plan


def _note_plugin_failures(out: TextIO) -> None:
    """One line naming the plugins that failed to load: their components are missing from this run."""
    from icon_bench.hooks.registry import get_registry

    failed = [p.name for p in get_registry().failures]
    if failed:
        print(
            f"warning: {len(failed)} plugin(s) failed to load: {', '.join(failed)} "
            "(`icon-bench plugins` shows why)",
            file=out,
        )


def _executor_kind(option: str | None, configured: str, address: str | None, out: TextIO) -> str:
    """The executor: --executor, else the suite's; --address (a Ray cluster) implies Ray, and contradicts --executor local."""
    from icon_bench.errors import IconBenchError

    if address is None:
        return option or configured
    if option == "local":
        raise IconBenchError(f"--address {address} names a Ray cluster, but --executor local runs trials in this "
                             "process: drop --address, or use --executor ray")
    if option is None and configured != "ray":
        print(f"--address {address}: running on the Ray executor (an address implies Ray)", file=out)
    return "ray"


def _write_report(results_dir: Path, out_dir: Path, out: TextIO) -> int:
    try:
        report_module = importlib.import_module("icon_bench.report.commands")
    except ModuleNotFoundError as exc:
        if exc.name != "icon_bench.report.commands":
            raise
        print("note: icon_bench.report.commands is not available; no report written", file=out)
        return EXIT_OK
    try:
        report_module.write_report(results_dir, out_dir)
    except Exception as exc:  # the rows are safe in the store; say what broke and carry on
        print(f"icon-bench: report failed: {type(exc).__name__}: {exc} (no report written to {out_dir})", file=sys.stderr)
        return EXIT_REPORT
    print(f"report: {out_dir}", file=out)
    return EXIT_OK


@stops_on_sigterm
def run_suite(suite: str | os.PathLike[str] | Suite, **options: Any) -> int:
    """Everything `icon-bench run` does (options: see _run_suite); returns the exit status (see EXIT_CODES;
    SIGTERM ends it as Ctrl-C does)."""
    with limits_environment():  # the run's memory and time limits, restored afterwards
        return _run_suite(suite, **options)


def _run_suite(
    suite: str | os.PathLike[str] | Suite,
    *,
    dry_run: bool = False,
    executor: str | None = None,
    address: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
    results: str | os.PathLike[str] | None = None,
    report: bool = True,
    report_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    max_cells: int = MAX_CELLS,
    wait: bool = False,
    max_memory: int | None = None,  # bytes a trial may use (None: this machine's memory)
    timeout: float | None = None,  # seconds a trial may run (None: the suite's, else a day)
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    **executor_kwargs: Any,
) -> int:
    """What run_suite does, within its environment."""
    from icon_bench.run.suite.plan_check import check_run
    from icon_bench.run.execution.store import ResultsStore
    from icon_bench.run.suite.model import Suite
    from icon_bench.run.suite.reader import load_suite

    out = out or sys.stdout
    if not isinstance(suite, Suite):
        suite = load_suite(suite, max_cells=max_cells)
    _note_plugin_failures(out)
    kind = _executor_kind(executor, suite.executor, address, out)
    results_dir = Path(results) if results is not None else suite.results_dir
    check_run(suite, kind, results_dir if dry_run else None, max_memory, timeout, out, dry_run)  # limits, data, GPUs
    # Said first, so a user sees which rows a rerun would resume from (a suite's paths depend on its root).
    print(f"results: {results_dir.absolute()}", file=out)
    count, product = suite.cell_count()
    if dry_run and count > MAX_CELLS:
        # Counting what each method and dataset would run means expanding every cell: not for a dry run.
        print(
            f"suite {suite.name!r} ({suite.source}): {count} cells ({product}) before exclude rules; "
            f"more than {MAX_CELLS}, so the plan per method and dataset is not expanded; results in {results_dir}",
            file=out,
        )
        return EXIT_OK
    run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    store = _tracked(ResultsStore(results_dir, suite=suite.name, run_id=run_id, rerun="--force" if force else None), suite, out, dry_run)
    choose = {"force": force, "retry_failed": retry_failed, "limit": limit}
    try:
        if suite.tune is not None or suite.discover is not None:
            run = dict(kind=kind, address=address, progress=progress, trial_fn=trial_fn, load_fn=load_fn, **executor_kwargs)
            return _run_tuned(suite, store, choose, out, dry_run=dry_run, wait=wait, report=report,
                              report_dir=report_dir, **run)
        if dry_run:
            _dry_run(suite, store, choose, out)
            return EXIT_OK
        store.check_writable()  # before the first trial, not after it
        with results_lock(results_dir, wait=wait, on_wait=lambda who: _say_waiting(results_dir, who, out)):
            summary = _plan_and_run(
                suite,
                store,
                choose,
                out,
                kind=kind,
                address=address,
                progress=progress,
                trial_fn=trial_fn,
                load_fn=load_fn,
                **executor_kwargs,
            )
    except RunLocked as exc:
        print(f"icon-bench: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except StoreError as exc:
        print(f"icon-bench: error: {exc}; no trial was run (give another folder with --results DIR)", file=sys.stderr)
        return EXIT_STORE
    if summary is None:
        return EXIT_OK
    return _finish(suite, summary, store, out, report=report, report_dir=report_dir)


def _tracked(store: ResultsStore, suite: Suite, out: TextIO, dry_run: bool) -> ResultsStore:
    """The store, or with a `track:` block in the suite one that also logs every row it stores (track/hook.py)."""
    if suite.track is None or dry_run:
        return store
    from icon_bench.track.hook import tracked_store

    return tracked_store(store, suite, out)


def _finish(
    suite: Suite,
    summary: RunSummary,
    store: ResultsStore,
    out: TextIO,
    *,
    report: bool,
    report_dir: str | os.PathLike[str] | None,
) -> int:
    """The table, what went wrong, the report -> the exit status."""
    print_summary(suite, summary, store, out)
    if summary.store_error:
        print_store_failure(summary, store)
        return EXIT_STORE
    if summary.interrupted:
        return interrupted(out)
    code = EXIT_FAILED if summary.failed else EXIT_OK
    return max(code, _report(store, out, report_dir)) if report else code


def _report(store: ResultsStore, out: TextIO, report_dir: str | os.PathLike[str] | None) -> int:
    from icon_bench.run.execution.store import REPORT_DIR

    # Beside the rows (results/ is not tracked): a user's run never rewrites the committed example
    # reports under reports/, which only `icon-bench report RESULTS -o reports/NAME` regenerates.
    out_dir = Path(report_dir) if report_dir is not None else store.directory / REPORT_DIR
    return _write_report(store.directory, out_dir, out)


def _run_tuned(suite: Suite, store: ResultsStore, choose: Mapping[str, Any], out: TextIO, *, dry_run: bool, wait: bool,
               report: bool, report_dir: str | os.PathLike[str] | None, **run: Any) -> int:
    """A suite with a `tune:` block (run/tuning/search.py) or a `discover:` block (run/discovery/run.py): the search
    on val, then each selection once on test."""
    if suite.discover is not None:
        from icon_bench.run.discovery.run import run_discover as run_tuned
    else:
        from icon_bench.run.tuning.search import run_tuned

    def summarise(summary: RunSummary) -> None:
        print_summary(suite, summary, store, out)

    if dry_run:
        run_tuned(suite, store, out, summarise, dry_run=True, **choose, **run)
        return EXIT_OK
    store.check_writable()
    with results_lock(store.directory, wait=wait, on_wait=lambda who: _say_waiting(store.directory, who, out)):
        _repair(store, out)
        outcome = run_tuned(suite, store, out, summarise, **choose, **run)
    if outcome.summary is not None and outcome.summary.store_error:
        print_store_failure(outcome.summary, store)
        return EXIT_STORE
    if outcome.interrupted:
        return interrupted(out)
    code = EXIT_FAILED if outcome.failed else EXIT_OK
    return max(code, _report(store, out, report_dir)) if report and outcome.finished else code


def _dry_run(suite: Suite, store: ResultsStore, choose: Mapping[str, Any], out: TextIO) -> None:
    plan = _plan().make_plan(suite, store, **choose)
    if store.skipped:  # a dry run changes nothing: say what the run will move aside
        print(f"note: skipped {len(store.skipped)} line(s) of {store.path} that are not good rows; the run (or "
              f"`icon-bench store repair {store.directory}`) moves them to {store.directory / 'results.quarantine.jsonl'}",
              file=out)
    if is_locked(store.directory):
        who = holder(store.directory)
        print(f"note: another run is writing these results now ({who or 'owner unknown'}); the plan changes as it goes", file=out)
    print_plan(suite, plan, out)


def _plan_and_run(
    suite: Suite,
    store: ResultsStore,
    choose: Mapping[str, Any],
    out: TextIO,
    *,
    kind: str,
    address: str | None,
    progress: bool,
    trial_fn: TrialFn | None,
    load_fn: LoadFn | None,
    **executor_kwargs: Any,
) -> RunSummary | None:
    """Plan (under the results lock, so a run that waited sees the rows of the one it waited for) and run."""
    _repair(store, out)
    plan = _plan().make_plan(suite, store, **choose)
    if store.skipped:
        print(f"note: skipped {len(store.skipped)} unreadable line(s) in {store.path}", file=out)
    if plan.stale:
        print(_plan().stale_note(plan), file=out)
        store.reruns = {tid: f"recipe changed: {why}" for tid, why in plan.stale.items()}
    if plan.one_seed:
        print(_plan().one_seed_note(plan), file=out)
    if not plan.to_run:
        print(f"nothing to run: {plan.done} of {len(plan.specs)} cells done; rows in {store.path}", file=out)
        return None
    from icon_bench.run.execution.executors import make_executor

    if suite.fail_on_warnings:
        from icon_bench.run.execution.trial import fail_on_warnings

        trial_fn = functools.partial(fail_on_warnings, trial_fn)
    runner = make_executor(
        kind,
        address=address,
        cpus=suite.resources.cpus,
        gpus=suite.resources.gpus,
        progress=progress,
        base=suite.root,
        out=out,
        **executor_kwargs,
    )
    print(
        f"running {len(plan.to_run)} of {len(plan.specs)} cells of suite {suite.name!r} ({kind} executor)",
        file=out,
        flush=True,
    )
    return runner.run(plan.to_run, store, trial_fn=trial_fn, load_fn=load_fn)


def _repair(store: ResultsStore, out: TextIO) -> None:
    """Under the lock, before planning: bad lines of the store move to its quarantine file, named here."""
    from icon_bench.run.execution.store_repair import describe_repair, repair

    problems = repair(store.directory)
    if problems:
        print("note: " + describe_repair(store.path, problems), file=out)


def _say_waiting(results_dir: Path, who: str, out: TextIO) -> None:
    print(f"waiting for the run writing {results_dir} to end ({who or 'owner unknown'}) ...", file=out, flush=True)
