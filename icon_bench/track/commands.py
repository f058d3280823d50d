"""`icon-bench export mlflow RESULTS`: the stored rows of a results folder logged to MLflow (idempotent)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_commands", "export_mlflow"]


def export_mlflow(
    results: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
    out: TextIO | None = None,
) -> dict[str, tuple[int, int, str]]:
    """Log every stored trial of `results` (a results folder or its results.jsonl) to MLflow.

    One parent run per suite found in the rows, one nested run per trial (its latest row), under
    `experiment` (default: the suite's name). Trials already logged from the same row are skipped,
    so exporting again, or after `track:` logged the run live, adds only what is new.
    """
    from tqdm import tqdm

    from icon_bench.errors import DataError
    from icon_bench.report.rows import results_file
    from icon_bench.run.execution.store import ResultsStore
    from icon_bench.track.mlflow_log import MlflowLog

    out = out or sys.stdout
    path = results_file(results)
    store = ResultsStore(path.parent)
    if path.suffix == ".parquet":  # a report's rows keep neither the tracebacks nor the store's stamps
        raise DataError(f"{path}: give the results folder the report was made from (its results.jsonl)")
    rows = store.rows()
    if not rows:
        raise DataError(f"{path} holds no result rows")
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_suite.setdefault(str(row.get("suite") or store.directory.name), []).append(row)
    done: dict[str, tuple[int, int, str]] = {}
    for suite, suite_rows in by_suite.items():
        log = MlflowLog(tracking_uri, experiment or suite, suite=suite, results_dir=store.directory)
        logged = 0
        bar = tqdm(suite_rows, desc=f"mlflow {suite}", unit="trial", disable=not progress, file=sys.stderr)
        for row in bar:
            logged += log.log_row(row, store.directory)
        log.finish()
        done[suite] = (logged, len(suite_rows) - logged, log.describe())
        print(f"mlflow: suite {suite!r}: {logged} trial(s) logged, {len(suite_rows) - logged} already there; "
              f"{log.describe()}", file=out)
    return done


def cmd_export(args: argparse.Namespace) -> int:
    from icon_bench.errors import IconBenchError

    try:
        export_mlflow(args.results, tracking_uri=args.tracking_uri, experiment=args.experiment,
                      progress=sys.stderr.isatty())
    except IconBenchError:
        raise
    except Exception as exc:  # MLflow's own errors (a refused store, a server that does not answer): one line
        first = (str(exc).splitlines() or [""])[0]
        raise IconBenchError(f"mlflow export failed: {type(exc).__name__}: {first}") from exc
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``icon-bench export mlflow``."""
    p = subparsers.add_parser(
        "export",
        help="log stored result rows to an experiment tracker (MLflow)",
        description="Log the rows of a results folder to an experiment tracker. Idempotent: a trial already "
        "logged from the same row is skipped, a newer row of it (a retried failure) replaces its run.",
    )
    sub = p.add_subparsers(dest="tracker", metavar="TRACKER")
    sub.required = True
    m = sub.add_parser(
        "mlflow",
        help="one parent run per suite, one nested run per trial (needs the mlflow extra)",
        description="One parent run per suite, one nested run per trial: its spec as parameters, its metrics, "
        "its loss and gradient-norm history as metric steps, a failed trial's traceback as an artifact, "
        "a tuned configuration's selected values and budget as tune.* parameters.",
    )
    m.add_argument("results", metavar="RESULTS", help="a results folder or its results.jsonl")
    m.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's default)")
    m.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the suite's name)")
    m.set_defaults(func=cmd_export)
