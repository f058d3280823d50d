"""Reports: result rows -> aggregated `Report` (model, rows, build) -> writers (tables, html, plots, index) -> commands."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TASKS",
    "Claim",
    "Reference",
    "Report",
    "Section",
    "aggregate",
    "build_report",
    "flatten_spec",
    "load_claims",
    "load_references",
    "load_results",
    "load_rows",
    "normalise_rows",
    "paired_comparisons",
    "rank_bands",
    "results_file",
    "write_report",
]

#: Where each public name lives. Loaded on first use: pandas and matplotlib are not imported until a
#: report is built, so the `report` and `leaderboard` commands cost nothing at CLI start-up.
_HOMES: dict[str, tuple[str, ...]] = {
    "icon_bench.report.build": ("aggregate", "build_report"),
    "icon_bench.report.compare": ("paired_comparisons",),
    "icon_bench.report.stats": ("rank_bands",),
    "icon_bench.report.claims": ("Claim", "load_claims"),
    "icon_bench.report.commands": ("write_report",),
    "icon_bench.report.model": ("TASKS", "Report", "Section"),
    "icon_bench.report.notebook": ("load_results",),
    "icon_bench.report.references": ("Reference", "load_references"),
    "icon_bench.report.rows": ("flatten_spec", "load_rows", "normalise_rows", "results_file"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'icon_bench.report' has no attribute {name!r}")
