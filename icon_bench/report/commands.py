"""`write_report` (every writer for one results store) and the `report` and `leaderboard` commands."""

from __future__ import annotations

import argparse
from pathlib import Path



def write_report(
    results: str | Path, out_dir: str | Path, *, plots: bool = True,
    baseline: str = "divergence=kl",
) -> Path:
    """Write leaderboard.md, leaderboard.csv, references.csv and compare.csv (when any), results.parquet (or
    .json), plots and index.html; return out_dir.

    `baseline` is what the paired comparisons compare with; with no row pairing with it the
    report has no comparison section (and no compare.csv).
    """
    from icon_bench.report import html, tables
    from icon_bench.report import plots as plotting
    from icon_bench.report.build import build_report
    from icon_bench.report.compare import paired_comparisons
    from icon_bench.report.compare import write_csv as write_compare_csv

    report = build_report(results)
    report.baseline = baseline
    report.comparisons = paired_comparisons(report.rows, baseline, primary_only=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Regenerated from its own rows (results.parquet), a report has no embeddings to draw: it keeps the
    # figures the run drew from the same rows.
    in_place = report.results_dir.resolve() == out.resolve()
    kept = {p.name: p.read_bytes() for p in out.glob("embedding-*.png")} if in_place else {}
    # A report folder is rewritten whole: figures and row dumps of an earlier report must not linger.
    for pattern in ("metrics-*.png", "grid-*.png", "embedding-*.png", "loss-*.png", "gradnorm-*.png",
                    "results.parquet", "results.json", "compare.csv"):
        for stale in out.glob(pattern):
            stale.unlink()
    if plots:
        plotting.make_plots(report, out, kept_embeddings=kept)
    tables.write_rows(report, out)
    tables.write_csv(report, out / "leaderboard.csv")
    tables.write_references_csv(report, out / "references.csv")
    if not report.comparisons.empty:
        write_compare_csv(report.comparisons, out / "compare.csv")
    tables.write_markdown(report, out / "leaderboard.md")
    html.write_html(report, out / "index.html")
    return out


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `icon-bench report`, `icon-bench leaderboard` and `icon-bench compare` to the CLI."""
    p = subparsers.add_parser("report", help="aggregate a results store into leaderboards, plots and a web page")
    p.add_argument("results", help="a results directory (holding results.jsonl) or the results.jsonl file")
    p.add_argument(
        "-o", "--output",
        help="report folder (default: RESULTS/report; name reports/NAME to regenerate a committed report)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures")
    p.add_argument("--baseline", default="divergence=kl", metavar="KEY=VALUE",
                   help="baseline of the paired comparisons (default divergence=kl)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("leaderboard", help="build reports/README.md indexing every suite's report")
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


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of `icon-bench report`."""
    from icon_bench.report.rows import results_file  # pandas: only when a report is made
    from icon_bench.run.store import REPORT_DIR

    # Beside the rows by default (results folders are not tracked): only an explicit -o rewrites a
    # committed report such as reports/quickstart.
    out = args.output or results_file(args.results).parent / REPORT_DIR
    path = write_report(args.results, out, plots=not args.no_plots, baseline=args.baseline)
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
    print(f"index written to {path} (claims of the papers: {path.parent / 'claims.csv'})")
    if args.readme:
        from icon_bench.report.measured import update_readme

        print(f"measured results written to {update_readme(args.readme, args.reports)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Handler of `icon-bench compare` (report/compare.py, imported only when the command runs)."""
    from icon_bench.report.compare import cmd_compare

    return cmd_compare(args)
