"""`icon-bench run`: suite -> plan (what is done, what will run) -> executor -> results store -> summary (-> report)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import importlib
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tabulate import tabulate

from icon_bench.run.ids import trial_id
from icon_bench.run.limits import MAX_CELLS

if TYPE_CHECKING:  # the run machinery (pydantic, numpy, ...) loads when a run starts, not for --help
    from icon_bench.run.execution import LoadFn, RunSummary, TrialFn
    from icon_bench.run.store import ResultsStore
    from icon_bench.run.suite import Suite

__all__ = ["Plan", "add_commands", "cmd_run", "make_plan", "run_suite"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def add_commands(subparsers: Any) -> None:
    """Add the `run` subcommand."""
    p = subparsers.add_parser(
        "run",
        help="run every cell of a suite, skipping cells already done (resumable)",
        description=(
            "Run a suite's trials and append their rows to the results store. A rerun skips cells whose "
            "latest row is ok and runs the rest (new and failed cells). Relative dataset paths and the "
            "results directory are relative to the current directory. Exit status: 0 all ok, 1 some "
            "trials failed, 130 interrupted (finished rows are kept; rerun to resume)."
        ),
    )
    p.add_argument("suite", metavar="SUITE", help="suite YAML file")
    p.add_argument("--dry-run", action="store_true", help="print the plan (cells, done, to run) and exit")
    p.add_argument("--executor", choices=["local", "ray"], help="override the suite's executor")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: start a local one)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="rerun every cell, done or not")
    mode.add_argument("--retry-failed", action="store_true", help="rerun only the cells whose latest row failed")
    p.add_argument("--results", metavar="DIR", help="results directory (default: the suite's, results/<name>)")
    p.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    p.add_argument(
        "--report-dir", metavar="DIR",
        help="where the report goes (default: RESULTS/report, beside the rows and untracked like them)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="run at most N of the cells that would run")
    p.add_argument(
        "--max-cells",
        type=int,
        default=MAX_CELLS,
        metavar="N",
        help=f"refuse a suite of more than N cells, counted from its axes before expanding (default {MAX_CELLS})",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    return run_suite(
        args.suite,
        dry_run=args.dry_run,
        executor=args.executor,
        address=args.address,
        force=args.force,
        retry_failed=args.retry_failed,
        results=args.results,
        report=not args.no_report,
        report_dir=args.report_dir,
        limit=args.limit,
        max_cells=args.max_cells,
    )


@dataclasses.dataclass
class Plan:
    """The cells of a suite against what the store already holds."""

    specs: list[dict[str, Any]]  # every cell, in suite order
    ids: list[str]
    status: dict[str, str]  # trial_id -> status of its latest stored row (only cells of this suite)
    to_run: list[dict[str, Any]]
    # trial_id -> how its ok row's recipe differs from what the cell runs now (those cells rerun)
    stale: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(1 for t in self.ids if self.status.get(t) == "ok" and t not in self.stale)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.ids if t in self.status and self.status[t] != "ok")


def make_plan(
    suite: Suite, store: ResultsStore, *, force: bool = False, retry_failed: bool = False, limit: int | None = None
) -> Plan:
    """Which cells run: not yet ok (default), all (force), or only failed ones (retry_failed); at most `limit`."""
    specs = suite.trials()
    ids = [trial_id(s) for s in specs]
    latest = {r["trial_id"]: r for r in store.rows()}
    status = {t: str(latest[t].get("status")) for t in ids if t in latest}
    stale = {} if force or retry_failed else _stale_cells(specs, ids, latest)
    if force:
        chosen = list(specs)
    elif retry_failed:
        chosen = [s for s, t in zip(specs, ids) if t in status and status[t] != "ok"]
    else:
        chosen = [s for s, t in zip(specs, ids) if status.get(t) != "ok" or t in stale]
    if limit is not None:
        if limit < 0:
            from icon_bench.errors import IconBenchError

            raise IconBenchError(f"--limit must be >= 0, got {limit}")
        chosen = chosen[:limit]
    return Plan(specs=specs, ids=ids, status=status, to_run=chosen, stale=stale)


def _stale_cells(
    specs: Sequence[Mapping[str, Any]], ids: Sequence[str], latest: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Done cells whose row was made under another recipe than the cell runs now -> what changed.

    A row's recipe is the method's defaults with the cell's overrides; when a new icon-bench (or
    plugin) changes a default, the stored number no longer measures the configuration its label
    names, so the cell runs again. Rows that recorded no recipe are trusted.
    """
    from icon_bench.run.trial import recipe_of

    stale: dict[str, str] = {}
    for spec, tid in zip(specs, ids):
        row = latest.get(tid)
        if row is None or row.get("status") != "ok":
            continue
        before = row.get("recipe") or (row.get("info") or {}).get("recipe")
        now = recipe_of(spec) if isinstance(before, Mapping) else None
        if isinstance(now, Mapping) and before != now:
            key = next(k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
            stale[tid] = f"{spec['method']}: {key} {before.get(key)!r} -> {now.get(key)!r}"
    return stale


def _stale_note(plan: Plan) -> str:
    first = next(iter(plan.stale.values()))
    return (
        f"note: {len(plan.stale)} done cell(s) ran under other recipe defaults than this icon-bench's "
        f"and run again (e.g. {first})"
    )


def _dataset_name(spec: Mapping[str, Any]) -> str:
    ds = spec.get("dataset")
    return str(ds.get("name") if isinstance(ds, Mapping) else ds)


def _label(value: Any) -> str:
    if isinstance(value, Mapping):
        extra = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name')}({extra})" if extra else str(value.get("name"))
    return "(default)" if value is None else str(value)


def print_plan(suite: Suite, plan: Plan, results_dir: Path, out: TextIO) -> None:
    """Counts per method and dataset: cells, done, failed, to run."""
    run_ids = {trial_id(s) for s in plan.to_run}
    table: dict[tuple[str, str], list[int]] = {}
    for spec, tid in zip(plan.specs, plan.ids):
        counts = table.setdefault((str(spec["method"]), _dataset_name(spec)), [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += plan.status.get(tid) == "ok" and tid not in plan.stale
        counts[2] += tid in plan.status and plan.status[tid] != "ok"
        counts[3] += tid in run_ids
    rows = [[m, d, *c] for (m, d), c in table.items()]
    rows.append(["total", "", len(plan.specs), plan.done, plan.failed, len(plan.to_run)])
    if plan.stale:
        print(_stale_note(plan), file=out)
    print(
        f"suite {suite.name!r} ({suite.source}): {len(plan.specs)} cells, {plan.done} done, "
        f"{plan.failed} failed, {len(plan.to_run)} to run; results in {results_dir}",
        file=out,
    )
    print(tabulate(rows, headers=["method", "dataset", "cells", "done", "failed", "to run"], tablefmt="simple"), file=out)


def _metric_columns(suite: Suite, rows: Sequence[Mapping[str, Any]], most: int = 5) -> list[str]:
    if suite.evaluate:
        return list(suite.evaluate)[:most]
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in (row.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                seen.setdefault(key)
    return list(seen)[:most]


def _warning_kinds(row: Mapping[str, Any]) -> str:
    """``"diverged, collapsed"`` from a row's warnings (each ``"<kind>: <detail>"``)."""
    return ", ".join(dict.fromkeys(str(w).split(":")[0] for w in row.get("warnings") or []))


def print_summary(suite: Suite, summary: RunSummary, store: ResultsStore, out: TextIO) -> None:
    """One line per row of this run (method, dataset, divergence, seed, status, main metrics)."""
    metrics = _metric_columns(suite, summary.rows)
    warned = [row for row in summary.rows if row.get("warnings")]
    table = []
    for row in summary.rows:
        spec = row.get("spec") or {}
        vals = [(row.get("metrics") or {}).get(m) for m in metrics]
        total_s = (row.get("timings") or {}).get("total_s")
        error = (row.get("error") or "").splitlines()[0][:70] if row.get("error") else ""
        table.append(
            [
                spec.get("method", row.get("method")),
                row.get("dataset_label") or _label(spec.get("dataset", row.get("dataset"))),
                # The spec's divergence (with its parameters) or else the one the method defaulted to.
                _label(spec["divergence"]) if spec.get("divergence") is not None else _label(row.get("divergence")),
                spec.get("seed", row.get("seed")),
                row.get("status"),
                *([_warning_kinds(row)] if warned else []),
                *vals,
                total_s,
                error,
            ]
        )
    if table:
        headers = ["method", "dataset", "divergence", "seed", "status", *(["warnings"] if warned else []), *metrics,
                   "time_s", "error"]
        print(tabulate(table, headers=headers, floatfmt=".3f", missingval="-", tablefmt="simple"), file=out)
    for row in warned:
        for warning in row["warnings"]:
            dataset = row.get("dataset_label") or row.get("dataset")
            where = f"{row.get('method')} on {dataset}, seed {row.get('seed')}, trial {row.get('trial_id')}"
            print(f"warning: {where}: {warning}", file=out)
    if warned and not suite.fail_on_warnings:
        print("(warned trials count as ok; `fail_on_warnings: true` in the suite stores them as failed)", file=out)
    print(
        f"{summary.ok} ok, {summary.failed} failed"
        + (f", {summary.not_run} not run (interrupted)" if summary.interrupted else "")
        + f" in {summary.elapsed_s:.1f} s; rows in {store.path}",
        file=out,
    )


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
        print(f"icon-bench: report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {out_dir}", file=out)
    return EXIT_OK


def run_suite(
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
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    **executor_kwargs: Any,
) -> int:
    """Everything `icon-bench run` does; returns the exit status (0 ok, 1 some failed, 130 interrupted)."""
    from icon_bench.run.executors import make_executor
    from icon_bench.run.plan_check import check_plan
    from icon_bench.run.store import REPORT_DIR, ResultsStore
    from icon_bench.run.suite import Suite
    from icon_bench.run.suite_file import load_suite

    out = out or sys.stdout
    if not isinstance(suite, Suite):
        suite = load_suite(suite, max_cells=max_cells)
    kind = executor or suite.executor
    check_plan(suite, kind, os.getcwd())  # data files and GPUs, before a cell is expanded or run
    results_dir = Path(results) if results is not None else suite.results_dir
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
    store = ResultsStore(results_dir, suite=suite.name, run_id=run_id)
    plan = make_plan(suite, store, force=force, retry_failed=retry_failed, limit=limit)
    if store.skipped:
        print(f"note: skipped {len(store.skipped)} unreadable line(s) in {store.path}", file=out)
    if dry_run:
        print_plan(suite, plan, results_dir, out)
        return EXIT_OK
    if plan.stale:
        print(_stale_note(plan), file=out)
    if not plan.to_run:
        print(f"nothing to run: {plan.done} of {len(plan.specs)} cells done; rows in {store.path}", file=out)
        return EXIT_OK
    if suite.fail_on_warnings:
        from icon_bench.run.trial import fail_on_warnings

        trial_fn = functools.partial(fail_on_warnings, trial_fn)
    runner = make_executor(
        kind, address=address, cpus=suite.resources.cpus, gpus=suite.resources.gpus, progress=progress, **executor_kwargs
    )
    print(
        f"running {len(plan.to_run)} of {len(plan.specs)} cells of suite {suite.name!r} ({kind} executor)",
        file=out,
        flush=True,
    )
    summary = runner.run(plan.to_run, store, trial_fn=trial_fn, load_fn=load_fn)
    print_summary(suite, summary, store, out)
    if summary.interrupted:
        print("interrupted: finished rows are kept; run the same command again to resume", file=out)
        return EXIT_INTERRUPTED
    code = EXIT_FAILED if summary.failed else EXIT_OK
    if report:
        # Beside the rows (results/ is not tracked): a user's run never rewrites the committed example
        # reports under reports/, which only `icon-bench report RESULTS -o reports/NAME` regenerates.
        out_dir = Path(report_dir) if report_dir is not None else results_dir / REPORT_DIR
        code = max(code, _write_report(results_dir, out_dir, out))
    return code
