"""Figures from each trial's own data: 2-D embeddings (the row's artifacts), loss and gradient-norm curves (its history)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.ticker
import numpy as np
import pandas as pd

from icon_bench.report.figure import colours, plt, save

if TYPE_CHECKING:
    from icon_bench.report.model import Section

MAX_CURVES = 10  # loss and gradient-norm plots: configurations drawn
MAX_EMBEDDINGS = 6  # 2-D embedding panels per dataset
SEED_STYLES = ("-", "--", ":", "-.")  # curves: seeds by line style and (hollow) marker
SEED_MARKERS = ("o", "s", "^", "D", "v", "P")


def _load_embedding(row: Mapping[str, Any], results_dir: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(embedding_2d, labels) from the row's artifacts (.npz paths relative to the results folder)."""
    artifacts = row.get("artifacts")
    candidates: list[Path] = []
    if isinstance(artifacts, Mapping):
        candidates += [results_dir / str(v) for v in artifacts.values() if isinstance(v, str) and v.endswith(".npz")]
    elif isinstance(artifacts, str):
        candidates.append(results_dir / artifacts)
    candidates.append(results_dir / "artifacts" / f"{row.get('trial_id')}.npz")
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as data:
            if "embedding_2d" not in data.files:
                continue
            emb = np.asarray(data["embedding_2d"], dtype=float)
            labels = np.asarray(data["labels"]) if "labels" in data.files else None
        if emb.ndim == 2 and emb.shape[1] == 2:
            return emb, labels
    return None


def plot_embeddings(section: Section, rows: pd.DataFrame, results_dir: Path, path: Path) -> str | None:
    """The 2-D embedding (coloured by class) of the best configuration of each method that saved one."""
    panels = []
    ok = rows[rows["status"] == "ok"]
    for method in dict.fromkeys(section.table["method"]):
        for rec in section.table[section.table["method"] == method].to_dict("records"):
            found = None
            for row in ok[ok["config_id"] == rec["config_id"]].sort_values("seed").to_dict("records"):
                found = _load_embedding(row, results_dir)
                if found is not None:
                    panels.append((f"{rec['label']} (seed {row['seed']})", *found))
                    break
            if found is not None:
                break  # the table is sorted best first: one panel per method
        if len(panels) >= MAX_EMBEDDINGS:
            break
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    legend: dict[str, Any] = {}
    for ax, (title, emb, labels) in zip(axes.flat, panels):
        colour: Any = "#1f77b4"
        if labels is not None and len(labels) == len(emb):
            # One qualitative colour per class (by rank), not a continuous map over label values.
            classes, index = np.unique(labels, return_inverse=True)
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            colour = cmap(index % cmap.N)
            if len(classes) <= cmap.N:  # beyond that colours repeat and a legend would lie
                legend.update({str(c): cmap(k) for k, c in enumerate(classes) if str(c) not in legend})
        ax.scatter(emb[:, 0], emb[:, 1], c=colour, s=4, alpha=0.8, linewidths=0)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    if legend:
        handles = [plt.Line2D([], [], marker="o", ls="", ms=5, color=c, label=name) for name, c in legend.items()]
        fig.legend(handles=handles, title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                   fontsize=8, ncol=1 if len(handles) <= 12 else 2)
    fig.suptitle(f"{section.dataset}: 2-D embeddings coloured by class", fontsize=10, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save(fig, path)
    repeat = "" if legend else " (colours repeat: too many classes for a legend)"
    return (
        f"{section.dataset}: 2-D embeddings (every split) of the best configuration per method, "
        f"coloured by class{repeat}"
    )


def _history(history: Any, key: str) -> list[float] | None:
    """The list `history[key]` of a row's history (a dict, or its JSON text), None when absent or empty."""
    if isinstance(history, str):
        try:
            history = json.loads(history)
        except json.JSONDecodeError:
            return None
    if not isinstance(history, Mapping):
        return None
    values = history.get(key)
    if isinstance(values, (list, tuple, np.ndarray)) and len(values) > 0:
        return [float(x) if x is not None else np.nan for x in values]
    return None


#: One curve set: (configuration label, divergence, [(seed, values), ...]).
Curves = list[tuple[str, str, list[tuple[Any, list[float]]]]]


def best_curves(section: Section, rows: pd.DataFrame, key: str) -> Curves:
    """`history[key]` of each seed of the best configurations (the table's order), those that recorded it."""
    if "history" not in rows.columns:
        return []
    ok = rows[rows["status"] == "ok"]
    curves: Curves = []
    for rec in section.table.to_dict("records"):
        trials = ok[ok["config_id"] == rec["config_id"]].sort_values("seed").to_dict("records")
        runs = [(r["seed"], _history(r.get("history"), key)) for r in trials]
        runs = [(s, c) for s, c in runs if c]
        if runs:
            curves.append((rec["label"], str(rec["divergence"]), runs))
        if len(curves) >= MAX_CURVES:
            break
    return curves


def _seeds(curves: Curves) -> list[Any]:
    return list(dict.fromkeys(seed for _, _, runs in curves for seed, _ in runs))


def _draw(ax: Any, curves: Curves, palette: Mapping[str, Any], seeds: list[Any]) -> None:
    """Each configuration's curves on `ax` (x from 1): colour = configuration, line style and marker = seed.

    Markers are staggered per seed so seeds whose curves coincide still show.
    """
    for label, _, runs in curves:
        for seed, curve in runs:
            k = seeds.index(seed)
            every = max(len(seeds), len(curve) // 8)  # room for each seed's own marker position
            ax.plot(np.arange(1, len(curve) + 1), curve, color=palette[label], lw=1.3, alpha=0.9,
                    ls=SEED_STYLES[k % len(SEED_STYLES)], marker=SEED_MARKERS[k % len(SEED_MARKERS)],
                    ms=4, mfc="white", markevery=(k * every // len(seeds), every))


def _legend(fig: Any, curves: Curves, palette: Mapping[str, Any], seeds: list[Any]) -> None:
    """The legend beside the figure: one colour per configuration, one line style and marker per seed."""
    handles = [plt.Line2D([], [], color=palette[label], lw=2, label=label) for label, _, _ in curves]
    handles += [
        plt.Line2D([], [], color="#555555", lw=1.3, ls=SEED_STYLES[k % len(SEED_STYLES)],
                   marker=SEED_MARKERS[k % len(SEED_MARKERS)], ms=4, mfc="white", label=f"seed {seed}")
        for k, seed in enumerate(seeds)
    ]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)


def _palette(curves: Curves, page: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The page's colour per configuration (one colour for one configuration in every figure), else a fresh one."""
    if page and all(label in page for label, _, _ in curves):
        return page
    return colours([label for label, _, _ in curves])


def plot_losses(section: Section, rows: pd.DataFrame, path: Path,
                palette: Mapping[str, Any] | None = None) -> str | None:
    """Training-loss curves (row["history"]["loss"]) of the best configurations: one panel per divergence.

    Losses of different divergences live on different scales (KL in nats, TV within [0, 1]), so
    each divergence gets its own panel and y axis. Colour is the configuration; line style and
    marker are the seed.
    """
    curves = best_curves(section, rows, "loss")
    if not curves:
        return None
    palette = _palette(curves, palette)
    divergences = list(dict.fromkeys(div for _, div, _ in curves))
    seeds = _seeds(curves)
    cols = min(3, len(divergences))
    nrows = (len(divergences) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols + 2.4, 3.0 * nrows + 0.6), squeeze=False)
    for ax in axes.flat[len(divergences):]:
        ax.set_axis_off()
    for ax, div in zip(axes.flat, divergences):
        _draw(ax, [c for c in curves if c[1] == div], palette, seeds)
        ax.set_title(f"divergence {div}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    _legend(fig, curves, palette, seeds)
    title = " (one panel per divergence: y scales not comparable)" if len(divergences) > 1 else ""
    fig.suptitle(f"{section.dataset}: training loss{title}; line style and marker = seed", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    panels = (
        "one panel per divergence (each with its own y axis: losses of different divergences are not comparable)"
        if len(divergences) > 1 else f"all under divergence {divergences[0]}"
    )
    return (
        f"{section.dataset}: training-loss curves of the {len(curves)} best configurations, {panels}; "
        "colour = configuration, line style and marker = seed"
    )


def plot_grad_norms(section: Section, rows: pd.DataFrame, path: Path,
                    palette: Mapping[str, Any] | None = None) -> str | None:
    """The gradient norm per optimizer step (row["history"]["grad_norm"]) of the best configurations, log y.

    One panel for every divergence: the point is comparing how they optimise (Beyond I-Con's
    crowding argument: bounded divergences keep gradients bounded). Rows without the key (written
    before it was recorded) are left out; None when no row has it.
    """
    curves = best_curves(section, rows, "grad_norm")
    # A log axis cannot show 0 (a step whose parameters got no gradient): leave such points out.
    curves = [(label, div, [(s, [v if v > 0 else np.nan for v in c]) for s, c in runs]) for label, div, runs in curves]
    curves = [c for c in curves if any(np.isfinite(v) for _, run in c[2] for v in run)]
    if not curves:
        return None
    palette = _palette(curves, palette)
    seeds = _seeds(curves)
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    _draw(ax, curves, palette, seeds)
    ax.set_yscale("log")
    # Plain "1e-03" labels: the default ones are mathtext, which the report style turns off (names with "$").
    ax.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))  # labels within a decade
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("gradient norm (L2, before clipping)")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, curves, palette, seeds)
    fig.suptitle(f"{section.dataset}: gradient norm per optimizer step; line style and marker = seed", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    divergences = list(dict.fromkeys(div for _, div, _ in curves))
    scales = (
        "; losses of different divergences differ in scale, so the norms compare the optimisation, not the losses"
        if len(divergences) > 1 else f"; all under divergence {divergences[0]}"
    )
    return (
        f"{section.dataset}: total L2 norm of the gradients of every trained parameter, before clipping, per "
        f"optimizer step (log scale) of the {len(curves)} best configurations{scales}; "
        "colour = configuration, line style and marker = seed"
    )
