"""How a report's numbers were obtained: the tuning lines, selected values and paired-comparison groups the writers share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from icon_bench.report.compare import CORRECTION_NOTE, display_rows

if TYPE_CHECKING:
    from icon_bench.report.model import Report, Section

__all__ = ["COMPARE_NOTE", "comparison_groups", "format_selected", "format_space", "how_obtained"]


def _tuning_lines(report: Report) -> list[tuple[str, str]]:
    """One header line per distinct tune block: budget, search space, algorithm, selection metric."""
    seen: list[str] = []
    for section in report.sections:
        if section.tuned and (text := how_obtained(section)) not in seen:
            seen.append(text)
    return [("tuning", text.removeprefix("Tuned: ")) for text in seen] + _resolution_lines(report)


def _resolution_lines(report: Report) -> list[tuple[str, str]]:
    """A caveat when the val split could not tell the selected candidate from others (run/tuning/candidates.py:resolution)."""
    finals = [t for t in report.rows.get("tune", []) if isinstance(t, Mapping) and t.get("role") == "final"
              and not t.get("untuned")]
    unresolved = [t["unresolved"] for t in finals if isinstance(t.get("unresolved"), Mapping)]
    if not unresolved:
        return []
    rows = sorted({int(u["n_val"]) for u in unresolved if u.get("n_val")})
    most = max(int(u.get("candidates", 0)) for u in unresolved)
    return [("tuning caveat", (
        f"in {len(unresolved)} of {len(finals)} selections the validation split ({', '.join(map(str, rows))} rows) "
        f"could not tell the selected candidate from others (up to {most} candidates within one validation row, "
        "ties included): those selections are no better than the others they tied with. Exact ties go to the "
        "smallest values in the search space's key order, not to the order the candidates were drawn in."))]


def format_selected(selected: Mapping[Any, Mapping[str, Any]] | None) -> str:
    """`seed 0: lr=0.0012, p.debias=0.3; seed 1: ...`: the values each seed's search selected on val."""
    if not selected:
        return "–"
    return "; ".join(
        f"seed {seed}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        for seed, values in sorted(selected.items(), key=lambda kv: str(kv[0]))
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value


def format_space(space: Mapping[str, Any] | None) -> str:
    """`lr ~ loguniform(1e-05, 0.1), p.debias in [0.0, 0.3]`: a search space as a header line says it."""
    parts = []
    for key, domain in (space or {}).items():
        if isinstance(domain, Mapping) and len(domain) == 1:
            (kind, (low, high)), = domain.items()
            parts.append(f"{key} ~ {kind}({_short(low)}, {_short(high)})")
        else:
            parts.append(f"{key} in {json.dumps(domain)}")
    return ", ".join(parts) or "none"


def how_obtained(section: Section) -> str:
    """One sentence on how a table's numbers were obtained: at defaults, or tuned with which search."""
    tune = section.tune
    if section.kind.startswith("discovered"):
        return ("Each loss the discovery search found (its budget on val; the Discovered section below), rerun on "
                "test at fresh seeds.")
    if not tune:
        return "Each configuration at its defaults (no search), scored on test."
    sched = tune.get("scheduler")
    search = f"{tune.get('algorithm', 'random')} search (seed {tune.get('seed')})" + (
        f" with ASHA early stopping (grace {sched.get('grace_epochs')} epochs, factor {sched.get('reduction_factor')})"
        if sched else ""
    )
    return (
        f"Tuned: {tune.get('budget')} search trials per configuration and seed, {search}, over "
        f"{format_space(tune.get('space'))}; selected on val by {tune.get('metric')}, then scored once on test."
    )


COMPARE_NOTE = (
    "Each configuration against its baseline on the same dataset, split and seeds (each seed once), on its table's "
    "first metric: the mean of the paired differences (configuration minus baseline) with a 95 % paired t interval "
    f"(none below 3 pairs). {CORRECTION_NOTE} Tuned and default results are never paired with each other."
)


def comparison_groups(report: Report) -> list[tuple[str, list[list[str]]]]:
    """(title, display rows) of the paired comparisons, one group per dataset, split and kind."""
    table = report.comparisons
    if table is None or table.empty:
        return []
    keys = ["protocol_version", "kind", "dataset", "split"]
    return [
        (f"{dataset} ({split} split), {kind}, protocol {version}", display_rows(group, set(report.meta.get("fraction_metrics", []))))
        for (version, kind, dataset, split), group in table.groupby(keys, sort=False)
    ]
