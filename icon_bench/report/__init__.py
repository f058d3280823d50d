"""Reports: result rows -> aggregated `Report` (model, rows, build) -> writers (tables, html, plots, index) -> commands."""

from __future__ import annotations

import importlib
from typing import Any

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

#: Where each public name lives. Loaded on first use: pandas and matplotlib are not imported until a
#: report is built, so the `report` and `leaderboard` commands cost nothing at CLI start-up.
_HOMES = {
    "aggregate": "icon_bench.report.build",
    "bootstrap_ranks": "icon_bench.report.build",
    "build_report": "icon_bench.report.build",
    "write_report": "icon_bench.report.commands",
    "TASKS": "icon_bench.report.model",
    "Report": "icon_bench.report.model",
    "Section": "icon_bench.report.model",
    "flatten_spec": "icon_bench.report.rows",
    "load_rows": "icon_bench.report.rows",
    "normalise_rows": "icon_bench.report.rows",
    "results_file": "icon_bench.report.rows",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'icon_bench.report' has no attribute {name!r}")
