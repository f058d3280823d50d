"""`write_report` (every writer for one results store) and the `report` and `leaderboard` commands."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from icon_bench.errors import IconBenchError

#: `icon-bench report` exit status when the report could not be built or written (nothing is left behind);
#: 2 is bad input (no results file, a bad option), as for every command.
EXIT_REPORT = 5


def write_report(
    results: str | Path, out_dir: str | Path, *, plots: bool = True,
    baseline: str = "divergence=kl",
) -> Path:
    """Write leaderboard.md, leaderboard.csv, references.csv, compare.csv and discovered.csv (when any),
    results.parquet (or .json), plots and index.html; return out_dir.

    `baseline` is what the paired comparisons compare with; with no row pairing with it the
    report has no comparison section (and no compare.csv).
    """
    from icon_bench.report import discovered_page, html, tables
    from icon_bench.report import plots as plotting
    from icon_bench.report.build import build_report
    from icon_bench.report.compare import paired_comparisons
    from icon_bench.report.compare import write_csv as write_compare_csv

    report = build_report(results)
    report.baseline = baseline
    report.comparisons = paired_comparisons(report.rows, baseline, primary_only=True)
    report.discovered = discovered_page.summarise(report)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Regenerated from its own rows (results.parquet), a report has no embeddings to draw: it keeps the
    # figures the run drew from the same rows.
    in_place = out.is_dir() and report.results_dir.resolve() == out.resolve()
    kept = {p.name: p.read_bytes() for p in out.glob("embedding-*.png")} if in_place else {}
    # Built whole in a temporary folder beside out_dir, then renamed into place: a report that fails
    # half way leaves the previous one (or nothing), never a mix.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        if plots:
            plotting.make_plots(report, tmp, kept_embeddings=kept)
            if report.discovered is not None:
                discovered_page.make_figures(report.discovered, tmp, set(report.meta.get("fraction_metrics", [])))
        discovered_page.write_files(report, tmp)
        tables.write_rows(report, tmp)
        tables.write_csv(report, tmp / "leaderboard.csv")
        tables.write_references_csv(report, tmp / "references.csv")
        if not report.comparisons.empty:
            write_compare_csv(report.comparisons, tmp / "compare.csv")
        tables.write_markdown(report, tmp / "leaderboard.md")
        html.write_html(report, tmp / "index.html")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


#: What a report writes; in an existing report folder these are replaced, any other file is kept.
REPORT_FILES = ("metrics-*.png", "grid-*.png", "embedding-*.png", "loss-*.png", "gradnorm-*.png", "discovered-*.png",
                "results.parquet", "results.json", "compare.csv", "discovered.csv", "discovery.json", "leaderboard.md",
                "leaderboard.csv", "references.csv", "index.html")


def _swap_in(new: Path, out: Path) -> None:
    """Put the finished report folder `new` at `out`, keeping the files of an old `out` that no report writes."""
    if not out.exists():
        os.replace(new, out)
        return
    if not out.is_dir():
        raise IconBenchError(f"{out} is a file, not a report folder")
    for entry in out.iterdir():
        if not any(entry.match(pattern) for pattern in REPORT_FILES) and not (new / entry.name).exists():
            shutil.move(str(entry), new / entry.name)  # a user's own notes beside the report
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `icon-bench report`, `icon-bench leaderboard` and `icon-bench compare` to the CLI."""
    p = subparsers.add_parser(
        "report",
        help="aggregate a results store into leaderboards, plots and a web page",
        description=(
            "Aggregate the rows of a results store (RESULTS/results.jsonl) into leaderboard.md and .csv, "
            "compare.csv, references.csv, results.parquet, figures and a self-contained index.html. The report is "
            "built in a temporary folder and renamed into place, so a failure leaves no partial report. Exit "
            f"status: 0 written; 2 bad input (no results file, a bad option); {EXIT_REPORT} the report failed "
            "while being built (nothing written)."
        ),
    )
    p.add_argument("results", help="a results directory (holding results.jsonl) or the results.jsonl file")
    p.add_argument(
        "-o", "--output",
        help="report folder (default: RESULTS/report; name reports/NAME to regenerate a committed report)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures")
    p.add_argument("--baseline", default=None, metavar="KEY=VALUE",
                   help="baseline of the paired comparisons (default: the one the report folder's compare.csv "
                        "used, else divergence=kl)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "leaderboard",
        help="build reports/README.md indexing every suite's report",
        description=(
            "Index a reports folder (one subfolder per suite, each made by `icon-bench report RESULTS -o "
            "reports/NAME`): REPORTS/README.md links every suite's report, lists the best configuration per "
            "dataset and task, and measures the papers' claims (REPORTS/claims.csv). Given a results folder, "
            "whose reports `icon-bench run` wrote beside the rows, it prints the commands that make a reports folder."
        ),
    )
    p.add_argument("reports", nargs="?", default="reports", help="folder holding one subfolder per suite report")
    p.add_argument("--readme", metavar="PATH",
                   help="also rewrite the generated Measured results block of this README (e.g. README.md)")
    p.set_defaults(func=cmd_leaderboard)

    p = subparsers.add_parser(
        "compare",
        help="paired differences against a baseline (same datasets, splits and seeds), with 95 %% intervals",
        description=(
            "Pair each configuration with its baseline on the same dataset, split, protocol and seed (each seed "
            "once) and report the mean paired difference with a 95 % paired t interval (none below 3 pairs), the "
            "p-value Holm-corrected over the lines of each table and metric, the smallest difference these seeds "
            "detect with 80 % power, and how many seeds would separate a difference that is not yet separated. "
            "Tuned and default results are compared separately."
        ),
    )
    p.add_argument("results", help="a results directory (holding results.jsonl) or the results.jsonl file")
    p.add_argument("--baseline", default="divergence=kl", metavar="KEY=VALUE",
                   help="what the others are compared with (default divergence=kl; e.g. p.debias=0, method=kmeans, "
                        "'divergence={name: alpha, a: 0.5}')")
    p.add_argument("--metric", action="append", metavar="M", help="only this metric (repeatable; default: all)")
    p.add_argument("--plan", action="store_true",
                   help="print only the power table: spread, detectable difference and seeds needed per line")
    p.add_argument("--json", action="store_true", help="print the comparisons as JSON lines")
    p.set_defaults(func=_cmd_compare)


def previous_baseline(report_dir: Path) -> str | None:
    """The baseline an earlier report in `report_dir` compared against (its compare.csv's `against`), if any.

    So regenerating a committed report keeps its comparisons (contrastive_quick pairs against p.debias=0).
    """
    import csv

    path = report_dir / "compare.csv"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as fh:
        first = next(csv.DictReader(fh), None)
    return (first or {}).get("against") or None


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of `icon-bench report`."""
    from icon_bench.report.rows import results_file  # pandas: only when a report is made
    from icon_bench.run.execution.store import REPORT_DIR

    # Beside the rows by default (results folders are not tracked): only an explicit -o rewrites a
    # committed report such as reports/quickstart.
    out = args.output or results_file(args.results).parent / REPORT_DIR
    baseline = args.baseline or previous_baseline(Path(out)) or "divergence=kl"
    try:
        path = write_report(args.results, out, plots=not args.no_plots, baseline=baseline)
    except (IconBenchError, KeyboardInterrupt):
        raise  # bad input (exit 2) or Ctrl-C: the CLI says it
    except Exception as exc:  # the report itself broke: its own exit status, and nothing half-written
        import sys

        print(f"icon-bench: error: report failed: {type(exc).__name__}: {exc}; nothing was written to {out}", file=sys.stderr)
        return EXIT_REPORT
    print(f"report written to {path}/ (index.html, leaderboard.md, leaderboard.csv)")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Handler of `icon-bench leaderboard`."""
    import sys
    import warnings

    from icon_bench.report.index import build_index

    with warnings.catch_warnings(record=True) as caught:  # claims skipped: listed on the page and here
        warnings.simplefilter("always")
        path = build_index(args.reports)
    for w in caught:
        print(f"icon-bench: warning: {w.message}", file=sys.stderr)
    claims = path.parent / "claims.csv"  # written only when some suite report was indexed
    indexed = any((p / "leaderboard.md").is_file() for p in path.parent.iterdir() if p.is_dir())
    print(f"index written to {path}" + (f" (claims of the papers: {claims})" if indexed and claims.is_file() else ""))
    if args.readme:
        from icon_bench.report.measured import update_readme

        print(f"measured results written to {update_readme(args.readme, args.reports)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Handler of `icon-bench compare` (report/compare.py, imported only when the command runs)."""
    from icon_bench.report.compare import cmd_compare

    return cmd_compare(args)
