"""How report cells read, in every format: values, ranks, seeds, marks and their notes, safe Markdown."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from icon_bench.report.model import Report, Section


DAGGER = "†"
PUBLISHED = "published"
WARNING_MARK = "⚠"
WARNING_NOTE = (
    f"{WARNING_MARK} warning: a trial of this configuration diverged (its training loss rose over the run, or "
    "became non-finite), collapsed (one cluster, or one embedding, for the whole test split) or nearly collapsed "
    "(its largest cluster held half the points and twice the largest class's share, or its effective number of "
    "clusters was below half the classes); it still counts in the mean, and the trials are listed under Warnings."
)
INCOMPLETE_NOTE = (
    f"{DAGGER} incomplete: fewer seeds than were run for this dataset, or a failed trial; "
    "the mean is over the seeds that finished (listed in the seeds column; † on a value: its n is short)."
)
SEED_FREE = "‡"
SEED_FREE_NOTE = (
    f"{SEED_FREE} seed-independent: the method's result does not depend on the seed (e.g. t-SNE from its "
    "PCA start, full batch), so it ran once per configuration: n = 1 is the whole sample, with no spread to show."
)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def format_value(mean: float, std: float, n: int, *, fraction: bool) -> str:
    """`64.8 ± 0.2 (3)`: mean ± sample std (n); fractions x100 with one decimal, others 4 significant digits."""
    if _missing(mean) or not n:
        return "–"
    scale = 100.0 if fraction else 1.0

    def num(x: float) -> str:
        return f"{x * scale:.1f}" if fraction else f"{x:.4g}"

    if _missing(std):
        return f"{num(mean)} ({int(n)})"
    return f"{num(mean)} ± {num(std)} ({int(n)})"


def _flag(value: Any) -> bool:
    """A yes/no column read back from rows or a CSV: missing is no."""
    return not _missing(value) and str(value).lower() in ("true", "1", "1.0")


def format_rank(rank: Any, lo: Any, hi: Any) -> str:
    """`1–3`: the rank band from paired tests (report/stats.py:rank_bands); `2` when the band is one place."""
    if _missing(rank):
        return "–"
    if _missing(lo) or _missing(hi):
        return str(int(rank))
    return str(int(lo)) if int(lo) == int(hi) else f"{int(lo)}–{int(hi)}"


AT_CHANCE = "at chance"
CHANCE_NOTE = (
    f"{AT_CHANCE}: the configuration's mean is not above its label-permutation baseline (the 95th percentile of "
    "the metric over 20 shuffles of the scored labels against the same clusters, averaged over seeds): it found "
    "nothing the labels share, so it is marked and not ranked. Rows written before the baseline was recorded "
    "are never marked."
)
RANK_NOTE = (
    "Rank: a band from paired tests on the table's first metric. Every two configurations are compared on the "
    "seeds both ran (paired t test, two-sided, Holm-corrected over all pairs of the table, which holds the chance "
    "of any false separation at 5 % even though the best is picked from the same runs); a band runs from 1 + the "
    "number of configurations separated above it to the number not separated below it. Two configurations "
    "whose bands overlap may still be separated: the paired comparisons say. Pairs sharing fewer than 3 seeds are "
    "not tested, so at 2 seeds every band spans the table. Rows are sorted by mean; ties in the band are not a "
    "ranking."
)


def format_seeds(rec: Mapping[str, Any]) -> str:
    """`3/3`, `1/1 ‡` (seed-independent), or `2/3 † missing 2` / `2/3 † failed 1` for an incomplete configuration."""
    text = f"{rec['n']}/{rec['n_expected']}"
    if _flag(rec.get("seed_independent")):
        text += f" {SEED_FREE}"
    if rec["complete"]:
        return text
    notes = []
    if rec["missing_seeds"]:
        notes.append("missing " + ", ".join(map(str, rec["missing_seeds"])))
    if rec["failed_seeds"]:
        notes.append("failed " + ", ".join(map(str, rec["failed_seeds"])))
    return f"{text} {DAGGER} " + "; ".join(notes)


def _seed_list(seeds: Iterable[Any]) -> str:
    return " ".join(map(str, seeds))


#: Markdown that could turn user text into a link, an image, code or a table cell: backslash-escaped.
_MD_SPECIAL = re.compile(r"([\\`\[\]|])")


def _md(text: Any) -> str:
    """User text (a label, a dataset or suite name, an error) safe anywhere in Markdown: shown as typed, never
    a link, an image, HTML, code or a table cell.

    HTML-escaped (no tag, no entity of its own), `[ ] \\ ` |` backslash-escaped (no link or image syntax,
    no code span, no cell break), line breaks folded; "://" and "www." are broken with an entity, so
    GitHub's bare-URL autolinks cannot make a link either.
    """
    text = _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
    text = re.sub(r"\s*[\r\n]+\s*", " ", text)
    text = re.sub(r"://", "&#58;//", text)
    return re.sub(r"(?i)\bwww\.", lambda m: m.group(0)[:3] + "&#46;", text)


def _code(text: Any) -> str:
    """User text as a Markdown code span that no backtick inside it can close early (pipes escaped for tables)."""
    body = re.sub(r"[\r\n]+", " ", str(text)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _fractions(report: Report) -> set[str]:
    return set(report.meta.get("fraction_metrics", []))


def _lower(report: Report) -> set[str]:
    return set(report.meta.get("lower_is_better", []))


def _metric_header(metric: str, fractions: set[str]) -> str:
    return f"{metric} (×100)" if metric in fractions else metric


def _anchor(config_id: str) -> str:
    return "config-" + "".join(ch for ch in str(config_id) if ch.isalnum() or ch in "-_")


def _rank_cols(section: Section) -> tuple[str, str, str] | None:
    if not section.metrics:
        return None
    m = section.metrics[0]
    return f"{m}_rank", f"{m}_rank_lo", f"{m}_rank_hi"
