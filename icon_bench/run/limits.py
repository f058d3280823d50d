"""Bounds on what a suite may ask for, in a module light enough for the CLI's argument defaults."""

from __future__ import annotations

__all__ = ["MAX_CELLS"]

#: Cells a suite may expand to unless the run raises the limit (`icon-bench run --max-cells N`):
#: counted from the axes before anything is expanded; 10 000 cells expand in about 0.2 s.
MAX_CELLS = 10_000
