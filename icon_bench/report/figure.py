"""What every report figure shares: the headless matplotlib backend, style, colours, scales, and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
RC = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10}
if "text.parse_math" in matplotlib.rcParams:
    RC["text.parse_math"] = False  # names come from suites and plugins: "$" must not start mathtext


def save(fig: plt.Figure, path: Path) -> None:
    """Write `fig` as PNG and close it."""
    # No "Software" entry (the matplotlib version): the same rows give the same bytes, so a
    # regenerated committed report shows no diff unless its content changed.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    plt.close(fig)


def scale(metric: str, fractions: set[str]) -> float:
    """×100 for fraction metrics, else 1."""
    return 100.0 if metric in fractions else 1.0


def colours(names: list[str]) -> dict[str, Any]:
    """One qualitative colour per name (tab10, or tab20 beyond ten)."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def fraction_bounds(values: np.ndarray, s: float) -> tuple[float, float]:
    """The range a fraction metric (shown ×`s`) can take: [0, s], or [-s, s] when a value is negative (ARI)."""
    finite = values[np.isfinite(values)]
    return (-s if finite.size and finite.min() < 0 else 0.0), s


def clip_to_fraction_range(ax: Any, values: np.ndarray, s: float) -> None:
    """Keep a ×100 axis inside [0, 100] (ticks at 102 on a fraction read as impossible values).

    The view keeps a sliver of margin so a point at exactly 0 or 100 is not cut in half; ticks stay
    inside the range.
    """
    lo_bound, hi_bound = fraction_bounds(values, s)
    margin = 0.015 * (hi_bound - lo_bound)
    lo, hi = ax.get_xlim()
    lo, hi = max(lo, lo_bound - margin), min(hi, hi_bound + margin)
    ax.set_xlim(lo, hi)
    ax.set_xticks([t for t in ax.get_xticks() if lo_bound <= t <= hi_bound and lo <= t <= hi])
