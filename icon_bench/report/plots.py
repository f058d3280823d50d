"""Report figures: `make_plots` (every figure of a report), metrics per configuration, the grid heat map."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from icon_bench.report.curves import plot_embeddings, plot_grad_norms, plot_losses
from icon_bench.report.figure import (
    RC,
    clip_to_fraction_range,
    colours,
    fraction_bounds,
    plt,
    save,
    scale,
)
from icon_bench.report.rows import flatten_spec

if TYPE_CHECKING:
    from icon_bench.report.model import Report, Section

__all__ = ["make_plots", "plot_embeddings", "plot_grad_norms", "plot_grid", "plot_losses", "plot_metrics"]

MAX_CONFIGS = 40  # error-bar plot: the best ones, so a huge grid stays legible


def make_plots(report: Report, out_dir: str | Path, *, registry: bool = True,
               kept_embeddings: Mapping[str, bytes] | None = None) -> list[Path]:
    """Draw every figure of `report` into `out_dir` (PNG) and record them on each section; return the paths.

    With `registry`, the grid's caption also names registered methods and divergences that were not run.
    `kept_embeddings` (file name -> PNG bytes) are embedding figures of an earlier report of the same
    rows, written back where their embeddings cannot be read (a report regenerated from its own folder).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    known = _registered_names() if registry else {}
    fractions = set(report.meta.get("fraction_metrics", []))
    lower = set(report.meta.get("lower_is_better", []))
    paths: list[Path] = []
    # One colour per configuration across every figure of the page (labels name configurations).
    palette = colours(list(dict.fromkeys(report.aggregated["label"]))) if not report.aggregated.empty else {}
    with plt.rc_context(RC):
        for section in report.sections:
            section.plots = []
            rows = report.rows[
                (report.rows["protocol_version"] == section.protocol_version)
                & (report.rows["split"] == section.split)
                & (report.rows["dataset"] == section.dataset)
            ]
            stem = _stem(section)
            for kind, draw in (
                ("metrics", lambda p: plot_metrics(section, fractions, lower, p, palette)),
                ("grid", lambda p: plot_grid(section, report.rows, fractions, lower, p, known)),
                ("embedding", lambda p: plot_embeddings(section, rows, report.results_dir, p)),
                ("loss", lambda p: plot_losses(section, rows, p, palette)),
                ("gradnorm", lambda p: plot_grad_norms(section, rows, p, palette)),
            ):
                path = out / f"{kind}-{stem}.png"
                try:
                    caption = draw(path)
                except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the whole report
                    warnings.warn(f"{kind} plot for {section.dataset} failed: {exc}", stacklevel=2)
                    plt.close("all")
                    continue
                if caption is None and path.name in (kept_embeddings or {}):
                    path.write_bytes(kept_embeddings[path.name])
                    caption = (f"{section.dataset}: 2-D embeddings coloured by class (drawn when the suite ran; "
                               "the embeddings themselves are not in the report folder)")
                if caption:
                    section.plots.append((caption, path))
                    paths.append(path)
    return paths


def _stem(section: Section) -> str:
    split = "" if section.split == "test" else f"-{section.split}"
    # A tuned (or discovered) table and the defaults one of a dataset: two figures.
    tuned = "-tuned" if section.tuned else "-discovered" if section.kind.startswith("discovered") else ""
    name = f"p{section.protocol_version}{split}-{section.dataset}-{section.task}{tuned}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:60]
    key = f"{section.protocol_version}\0{section.dataset}\0{section.task}" + ("" if section.split == "test" else f"\0{section.split}")
    key += f"\0{section.kind}" if tuned else ""
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return f"{slug}-{digest}"  # the digest keeps two names that slug alike apart


def _registered_names() -> dict[str, list[str]]:
    try:
        from icon_bench.hooks.registry import get_registry

        reg = get_registry()
        return {kind: list(reg.names(kind)) for kind in ("method", "divergence", "kernel")}
    except Exception:  # noqa: BLE001 - the report must not depend on every plugin importing
        return {}


def plot_metrics(section: Section, fractions: set[str], lower: set[str], path: Path,
                 palette: Mapping[str, Any] | None = None) -> str | None:
    """Mean ± std of each metric per configuration (horizontal error bars; ↓: in `lower`).

    Each configuration takes its colour from `palette` (the page's, so it matches the curves), else
    a fresh one; the y axis names the configurations.
    """
    metrics = section.metrics[:4]
    table = section.table.head(MAX_CONFIGS)
    if not metrics or table.empty:
        return None
    labels = list(table["label"])[::-1]  # best at the top
    if not palette or not all(label in palette for label in labels):
        palette = colours(list(dict.fromkeys(table["label"])))
    height = 1.2 + 0.28 * len(labels)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 2.6, height), sharey=True, squeeze=False)
    y = np.arange(len(labels))
    flags = table["seed_independent"] if "seed_independent" in table else pd.Series(False, index=table.index)
    seed_free = flags.fillna(False).astype(bool).to_numpy()[::-1]
    for ax, metric in zip(axes[0], metrics):
        s = scale(metric, fractions)
        mean = table[f"{metric}_mean"].to_numpy(float)[::-1] * s
        std = np.nan_to_num(table[f"{metric}_std"].to_numpy(float)[::-1] * s)
        complete = table["complete"].to_numpy(bool)[::-1]
        for i, label in enumerate(labels):
            if np.isnan(mean[i]):
                continue
            ax.errorbar(mean[i], y[i], xerr=std[i], fmt="D" if seed_free[i] else "o", color=palette[label],
                        capsize=3, ms=5, mfc=palette[label] if complete[i] else "white")
        ax.set_title(f"{metric}{' (×100)' if s != 1 else ''}{' ↓' if metric in lower else ''}")
        ax.grid(axis="x", alpha=0.3)
        if s != 1:
            clip_to_fraction_range(ax, np.concatenate([mean - std, mean + std]), s)
    axes[0][0].set_yticks(y, labels)
    handles = []
    incomplete = not table["complete"].astype(bool).all()
    if incomplete:  # a legend entry for a marker the plot does not show would only mislead
        handles.append(plt.Line2D([], [], marker="o", ls="", color="grey", mfc="white", label="incomplete"))
    if seed_free.any():
        handles.append(plt.Line2D([], [], marker="D", ls="", color="grey", label="seed-independent (n = 1)"))
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 5),
                   frameon=False)
    how = f", {section.kind}" if section.tuned else ""
    title = f"{section.dataset}, {section.task}{how}: mean ± std over seeds (protocol {section.protocol_version})"
    fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save(fig, path)
    hollow = "; hollow = incomplete" if incomplete else ""
    return f"{section.dataset}: metrics per configuration (mean ± sample std over seeds{hollow})"


def _kernel_name(spec: Mapping[str, Any], row_components: Any, side: str) -> str | None:
    flat = flatten_spec(spec)
    name = flat.get(f"{side}.name")
    if name is None and isinstance(row_components, Mapping):
        name = (row_components.get(side) or {}).get("name") if isinstance(row_components.get(side), Mapping) else None
    return None if name is None else str(name)


def plot_grid(
    section: Section,
    all_rows: pd.DataFrame,
    fractions: set[str],
    lower: set[str],
    path: Path,
    known: Mapping[str, list[str]],
) -> str | None:
    """Heat map of the grid this section ran: divergence x method (or p kernel x q kernel when those vary).

    Each cell holds the best mean of the primary metric (the smallest if it is in `lower`) among its
    configurations; "not run" marks a combination of the section's own names that was not run. The axes
    hold only names this section ran; registered names (`known`) that were not run are listed in
    the caption, not drawn, so the picture never suggests a grid far larger than the suite.
    """
    if not section.metrics or section.table.empty:
        return None
    metric = section.metrics[0]
    vrows = all_rows[(all_rows["protocol_version"] == section.protocol_version) & (all_rows["split"] == section.split)]
    comps = dict(zip(vrows["config_id"], vrows["components"])) if "components" in vrows else {}
    # Axis order: as the rows ran (the suite's order), not the ranking of the table.
    order = {cid: k for k, cid in enumerate(dict.fromkeys(vrows["config_id"]))}
    table = section.table.assign(_order=section.table["config_id"].map(order)).sort_values("_order", kind="stable")
    table["_p"] = [_kernel_name(s, comps.get(c), "p") for s, c in zip(table["spec"], table["config_id"])]
    table["_q"] = [_kernel_name(s, comps.get(c), "q") for s, c in zip(table["spec"], table["config_id"])]
    # Kernels set in the suite itself (spec p.name / q.name) make the grid p x q; kernels that merely
    # differ because the methods differ do not.
    explicit = any(f"{side}.name" in flatten_spec(s) for s in table["spec"] for side in ("p", "q"))
    if explicit and (table["_p"].nunique(dropna=True) > 1 or table["_q"].nunique(dropna=True) > 1):
        row_key, col_key, row_title, col_title = "_p", "_q", "p kernel", "q kernel"
        table[["_p", "_q"]] = table[["_p", "_q"]].fillna("default")
        unrun = {"kernels": [k for k in known.get("kernel", []) if k not in set(table["_p"]) | set(table["_q"])]}
    else:
        row_key, col_key, row_title, col_title = "divergence", "method", "divergence", "method"
        unrun = {"methods": [m for m in known.get("method", []) if m not in set(vrows["method"])],
                 "divergences": [d for d in known.get("divergence", []) if d not in set(vrows["divergence"])]}
    rows_axis, cols_axis = list(dict.fromkeys(table[row_key])), list(dict.fromkeys(table[col_key]))
    if len(rows_axis) < 2 or len(cols_axis) < 2:
        return None  # one row or one column of cells says nothing the metrics plot does not
    values, explored = _best_cells(table, metric, row_key, col_key, rows_axis, cols_axis, metric in lower)
    s = scale(metric, fractions)
    fig, ax = plt.subplots(figsize=(2.6 + 0.7 * len(cols_axis), 1.3 + 0.4 * len(rows_axis)))
    _draw_heat_map(fig, ax, values, explored, s, metric, metric in lower)
    ax.set_xticks(range(len(cols_axis)), cols_axis, rotation=35 if len(cols_axis) > 2 else 0,
                  ha="right" if len(cols_axis) > 2 else "center")
    ax.set_yticks(range(len(rows_axis)), rows_axis)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    how = f" ({section.kind})" if section.tuned else ""
    ax.set_title(f"{section.dataset}{how}: best {metric} per cell ({int(explored.sum())} of {values.size} run)",
                 fontsize=10)
    save(fig, path)
    also = "; ".join(f"{kind} {', '.join(names)}" for kind, names in unrun.items() if names)
    return (
        f"{section.dataset}: {row_title} × {col_title} grid — {int(explored.sum())} of {values.size} cells run; "
        f"best {metric} per cell" + (f". Registered but not in this suite: {also}" if also else "")
    )


def _best_cells(
    table: pd.DataFrame, metric: str, row_key: str, col_key: str, rows_axis: list, cols_axis: list, lower_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(best mean per cell, NaN where none; whether any configuration ran in the cell)."""
    values = np.full((len(rows_axis), len(cols_axis)), np.nan)
    explored = np.zeros_like(values, dtype=bool)
    for rec in table.to_dict("records"):
        i, j = rows_axis.index(rec[row_key]), cols_axis.index(rec[col_key])
        explored[i, j] = True
        v = rec[f"{metric}_mean"]
        if not np.isnan(v) and (np.isnan(values[i, j]) or (v < values[i, j] if lower_better else v > values[i, j])):
            values[i, j] = v
    return values, explored


def _draw_heat_map(
    fig: plt.Figure, ax: Any, values: np.ndarray, explored: np.ndarray, s: float, metric: str, lower_better: bool
) -> None:
    """The cells, their labels and a colour bar on a stated scale.

    A fraction metric takes the fixed scale of what it can take (0 to 100, or -100 to 100 for ARI
    when a value is negative), so a 5-point spread looks like one and colours mean the same in
    every grid; another metric spans its grid's own range, which the colour bar's label says.
    """
    finite = values[~np.isnan(values)] * s
    if s != 1:
        vmin, vmax = fraction_bounds(finite, s)
        scale_note = f"fixed scale {vmin:g} to {vmax:g}"
    else:
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if vmax - vmin < 1e-9:  # one value: a small band around it, not matplotlib's ±10 % (95 -> 104.5)
            pad = 0.05 * max(abs(vmax), 1.0)
            vmin, vmax = vmin - pad, vmax + pad
        scale_note = "scale: this grid's range"
    cmap = plt.get_cmap("viridis_r" if lower_better else "viridis").with_extremes(bad="#f2f2f2")
    image = ax.imshow(np.ma.masked_invalid(values * s), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    _annotate_cells(ax, values, explored, s, (vmin + vmax) / 2, lower_better)
    ax.set_xticks(np.arange(-0.5, values.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, values.shape[0], 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"best {metric}{' ×100' if s != 1 else ''} ({scale_note})")


def _annotate_cells(ax: Any, values: np.ndarray, explored: np.ndarray, s: float, mid: float, lower_better: bool) -> None:
    """Write each grid cell's value (scaled by ``s``), "failed" where every run failed, "not run" where none ran."""
    rows_axis, cols_axis = range(values.shape[0]), range(values.shape[1])
    for i in rows_axis:
        for j in cols_axis:
            if not np.isnan(values[i, j]):
                v = values[i, j] * s
                text = f"{v:.1f}" if s != 1 else f"{v:.3g}"
                dark = (v < mid) != lower_better
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            elif explored[i, j]:
                ax.text(j, i, "failed", ha="center", va="center", fontsize=7, color="#cf222e")
            else:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=6.5, color="#8c959f")
