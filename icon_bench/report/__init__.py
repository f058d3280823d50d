"""Reports: result rows -> aggregated `Report` (model, rows, build) -> writers (tables, html, plots, index) -> commands."""

from __future__ import annotations

from icon_bench.report.build import aggregate, bootstrap_ranks, build_report
from icon_bench.report.commands import write_report
from icon_bench.report.model import TASKS, Report, Section
from icon_bench.report.references import Reference, load_references
from icon_bench.report.rows import flatten_spec, load_rows, normalise_rows, results_file

__all__ = [
    "TASKS",
    "Reference",
    "Report",
    "Section",
    "aggregate",
    "bootstrap_ranks",
    "build_report",
    "flatten_spec",
    "load_references",
    "load_rows",
    "normalise_rows",
    "results_file",
    "write_report",
]
