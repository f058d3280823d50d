"""The `icon-bench run` and `icon-bench discover` commands: their arguments, and the call into runner.run_suite."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from icon_bench.run.suite.limits import MAX_CELLS, memory_size
from icon_bench.runner import EXIT_CODES, run_suite

__all__ = ["add_commands", "cmd_discover", "cmd_run"]


def add_commands(subparsers: Any) -> None:
    """Add the `run` subcommand."""
    p = argparse.ArgumentParser(add_help=False)  # the options `run` and `discover` share
    p.add_argument("suite", metavar="SUITE", help="suite YAML file")
    p.add_argument("--dry-run", action="store_true", help="print the plan (cells, done, to run) and exit")
    p.add_argument("--executor", choices=["local", "ray"], help="override the suite's executor")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster address; implies --executor ray (default: start a local cluster)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="rerun every cell, done or not")
    mode.add_argument("--retry-failed", action="store_true", help="rerun only the cells whose latest row failed")
    p.add_argument("--results", metavar="DIR", help="results directory (default: the suite's `results`, else results/<name> under its root)")
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
    p.add_argument(
        "--max-memory",
        type=memory_size,
        metavar="SIZE",
        help="memory a trial may use, e.g. 64G (default: this machine's); a trial estimated above it, or a data "
        "file whose arrays are larger, is refused before the run",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop a trial running longer than this and store it as failed with status timeout "
        "(default: the suite's `timeout`, else 86400)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another run is writing the same results, wait for it to end, then run what is still to do",
    )
    status = "Exit status: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + "; 2 any other error."
    subparsers.add_parser(
        "run", parents=[p], help="run every cell of a suite, skipping cells already done (resumable)",
        description=(
            "Run a suite's trials and append their rows to the results store. A rerun skips cells whose "
            "latest row is ok and runs the rest (new and failed cells). Relative paths in the suite "
            "(results, dataset paths) are relative to its project root: the nearest folder above the "
            "suite file holding pyproject.toml or .git, else the suite file's folder; options on the "
            "command line are relative to the current directory. " + status
        ),
    ).set_defaults(func=cmd_run)
    subparsers.add_parser(
        "discover", parents=[p], help="search a suite's space of losses (its discover: block), then confirm the best",
        description=(
            "Run a suite with a discover: block (docs/discovery.md): a TPE search over losses on the validation "
            "split, the same budget per dataset, every trial stored (resumable), then the top candidates and the "
            "task's named methods on test at fresh seeds, and the report's Discovered section. " + status
        ),
    ).set_defaults(func=cmd_discover)


def cmd_discover(args: argparse.Namespace) -> int:
    """`icon-bench run` for a suite that must hold a discover: block (said at once when it does not)."""
    from icon_bench.errors import SuiteError
    from icon_bench.run.suite.reader import load_suite

    try:
        suite = load_suite(args.suite, max_cells=args.max_cells)
    except SuiteError as exc:
        print(f"icon-bench: error: {exc}", file=sys.stderr)
        return 2
    if suite.discover is None:
        print(f"icon-bench: error: {args.suite} has no discover: block; `icon-bench run {args.suite}` runs its grid",
              file=sys.stderr)
        return 2
    args.suite = suite
    return cmd_run(args)


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
        wait=args.wait,
        max_memory=args.max_memory,
        timeout=args.timeout,
    )
