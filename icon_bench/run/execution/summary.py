"""What `icon-bench run` prints: the plan, the table of finished trials, their failures and warnings."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tabulate import tabulate

from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.progress import OK_STATUSES
from icon_bench.run.execution.labels import (
    component_label,
    divergence_label,
    first_line,
    trial_label,
    tune_label,
)

if TYPE_CHECKING:
    from icon_bench.run.execution.base import RunSummary
    from icon_bench.run.execution.plan import Plan
    from icon_bench.run.execution.store import ResultsStore
    from icon_bench.run.suite.model import Suite

__all__ = ["print_failures", "print_plan", "print_store_failure", "print_summary"]


def _dataset_name(spec: Mapping[str, Any]) -> str:
    ds = spec.get("dataset")
    return str(ds.get("name") if isinstance(ds, Mapping) else ds)


def print_plan(suite: Suite, plan: Plan, out: TextIO) -> None:
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
        from icon_bench.run.execution.plan import stale_note

        print(stale_note(plan), file=out)
    if plan.one_seed:
        from icon_bench.run.execution.plan import one_seed_note

        print(one_seed_note(plan), file=out)
    print(
        f"suite {suite.name!r} ({suite.source}): {len(plan.specs)} cells, {plan.done} done, "
        f"{plan.failed} failed, {len(plan.to_run)} to run",
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


def print_summary(suite: Suite, summary: RunSummary, store: ResultsStore, out: TextIO) -> None:
    """One line per row of this run (method, dataset, divergence, seed, status, main metrics)."""
    metrics = _metric_columns(suite, summary.rows)
    warned = [row for row in summary.rows if row.get("warnings")]
    tuned = getattr(suite, "tune", None) is not None  # a column with each row's candidate or selection
    table = []
    for row in summary.rows:
        spec = row.get("spec") or {}
        vals = [(row.get("metrics") or {}).get(m) for m in metrics]
        total_s = (row.get("timings") or {}).get("total_s")
        error = _shorten(first_line(row.get("error")), 40)
        table.append(
            [
                spec.get("method", row.get("method")),
                row.get("dataset_label") or component_label(spec.get("dataset", row.get("dataset"))),
                divergence_label(spec, row),
                spec.get("seed", row.get("seed")),
                row.get("status"),
                *([tune_label(row)] if tuned else []),
                *([_warning_kinds(row)] if warned else []),
                *vals,
                total_s,
                error,
            ]
        )
    if table:
        headers = ["method", "dataset", "divergence", "seed", "status", *(["tuned"] if tuned else []),
                   *(["warnings"] if warned else []), *metrics,
                   "time_s", "error"]
        print(tabulate(table, headers=headers, floatfmt=".3f", missingval="-", tablefmt="simple"), file=out)
    print_failures(summary.rows, store, out)
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


def _warning_kinds(row: Mapping[str, Any]) -> str:
    """``"diverged, collapsed"`` from a row's warnings (each ``"<kind>: <detail>"``)."""
    return ", ".join(dict.fromkeys(str(w).split(":")[0] for w in row.get("warnings") or []))


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_failures(rows: Sequence[Mapping[str, Any]], store: ResultsStore, out: TextIO, most: int = 20) -> None:
    """Under the table: each failed trial, the whole first line of its error and where its traceback is."""
    failed = [r for r in rows if r.get("status") not in OK_STATUSES]  # a tuned suite's search rows succeeded
    if not failed:
        return
    print(f"\nfailed ({len(failed)}):", file=out)
    for row in failed[:most]:
        print(f"  {trial_label(row.get('spec') or {}, row)}: {first_line(row.get('error'))}", file=out)
        where = row.get("traceback_file")
        print(f"    traceback: {store.directory / where if where else '(none recorded: the trial did not raise)'}", file=out)
    if len(failed) > most:
        print(f"  ... and {len(failed) - most} more (each row's error and traceback are in {store.path})", file=out)


def print_store_failure(summary: RunSummary, store: ResultsStore) -> None:
    """The store refused a row: what stopped, where the refused rows are, and how to put them back."""
    stored = len(summary.rows) - summary.rescued - len(summary.unsaved)
    lines = [
        f"icon-bench: error: {summary.store_error}",
        f"  the sweep stopped: {stored} row(s) stored, {summary.not_run} cell(s) not run (a rerun runs them).",
    ]
    if summary.fallback and summary.rescued:
        fallback = Path(summary.fallback)
        lines += [
            f"  the {summary.rescued} row(s) that finished since are saved in {fallback / 'results.jsonl'};",
            "  once the store is writable, add them (with their artifacts and tracebacks) with:",
            f"    icon-bench store merge {store.directory} {fallback}",
        ]
    if summary.unsaved:
        lines.append(f"  {len(summary.unsaved)} row(s) could not be saved anywhere; here they are as JSON lines:")
        lines += [json.dumps({k: v for k, v in r.items() if k != "artifacts"}, default=str) for r in summary.unsaved]
    print("\n".join(lines), file=sys.stderr)
