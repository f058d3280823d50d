"""Report figures (matplotlib, Agg): metrics per configuration, the grid "periodic table", embeddings, losses."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from icon_bench.report.rows import flatten_spec  # noqa: E402

if TYPE_CHECKING:
    from icon_bench.report.model import Report, Section

DPI = 110
MAX_CONFIGS = 40  # error-bar plot: the best ones, so a huge grid stays legible
MAX_CURVES = 10  # loss plot: configurations drawn
MAX_EMBEDDINGS = 6  # 2-D embedding panels per dataset
_RC = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10}
if "text.parse_math" in matplotlib.rcParams:
    _RC["text.parse_math"] = False  # names come from suites and plugins: "$" must not start mathtext


def make_plots(report: Report, out_dir: str | Path, *, registry: bool = True) -> list[Path]:
    """Draw every figure of `report` into `out_dir` (PNG) and record them on each section; return the paths.

    With `registry`, the grid heat map also shows registered methods and divergences that were not
    run, as unexplored cells.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    known = _registered_names() if registry else {}
    fractions = set(report.meta.get("fraction_metrics", []))
    lower = set(report.meta.get("lower_is_better", []))
    paths: list[Path] = []
    with plt.rc_context(_RC):
        for section in report.sections:
            section.plots = []
            rows = report.rows[
                (report.rows["protocol_version"] == section.protocol_version)
                & (report.rows["split"] == section.split)
                & (report.rows["dataset"] == section.dataset)
            ]
            stem = _stem(section)
            for kind, draw in (
                ("metrics", lambda p: plot_metrics(section, fractions, lower, p)),
                ("grid", lambda p: plot_grid(section, report.rows, fractions, lower, p, known)),
                ("embedding", lambda p: plot_embeddings(section, rows, report.results_dir, p)),
                ("loss", lambda p: plot_losses(section, rows, p)),
            ):
                path = out / f"{kind}-{stem}.png"
                try:
                    caption = draw(path)
                except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the whole report
                    warnings.warn(f"{kind} plot for {section.dataset} failed: {exc}", stacklevel=2)
                    plt.close("all")
                    continue
                if caption:
                    section.plots.append((caption, path))
                    paths.append(path)
    return paths


def _stem(section: Section) -> str:
    split = "" if section.split == "test" else f"-{section.split}"
    name = f"p{section.protocol_version}{split}-{section.dataset}-{section.task}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:60]
    key = f"{section.protocol_version}\0{section.dataset}\0{section.task}" + ("" if section.split == "test" else f"\0{section.split}")
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return f"{slug}-{digest}"  # the digest keeps two names that slug alike apart


def _registered_names() -> dict[str, list[str]]:
    try:
        from icon_bench.hooks.registry import get_registry

        reg = get_registry()
        return {kind: list(reg.names(kind)) for kind in ("method", "divergence", "kernel")}
    except Exception:  # noqa: BLE001 - the report must not depend on every plugin importing
        return {}


def _save(fig: plt.Figure, path: Path) -> None:
    # No "Software" entry (the matplotlib version): the same rows give the same bytes, so a
    # regenerated committed report shows no diff unless its content changed.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    plt.close(fig)


def _scale(metric: str, fractions: set[str]) -> float:
    return 100.0 if metric in fractions else 1.0


def _colours(names: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def plot_metrics(section: Section, fractions: set[str], lower: set[str], path: Path) -> str | None:
    """Mean ± std of each metric per configuration (horizontal error bars, coloured by method; ↓: in `lower`)."""
    metrics = section.metrics[:4]
    table = section.table.head(MAX_CONFIGS)
    if not metrics or table.empty:
        return None
    labels = list(table["label"])[::-1]  # best at the top
    methods = list(dict.fromkeys(table["method"]))
    colours = _colours(methods)
    height = 1.2 + 0.28 * len(labels)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 2.6, height), sharey=True, squeeze=False)
    y = np.arange(len(labels))
    for ax, metric in zip(axes[0], metrics):
        s = _scale(metric, fractions)
        mean = table[f"{metric}_mean"].to_numpy(float)[::-1] * s
        std = np.nan_to_num(table[f"{metric}_std"].to_numpy(float)[::-1] * s)
        complete = table["complete"].to_numpy(bool)[::-1]
        for i, method in enumerate(table["method"].to_numpy()[::-1]):
            if np.isnan(mean[i]):
                continue
            ax.errorbar(mean[i], y[i], xerr=std[i], fmt="o", color=colours[method], capsize=3, ms=5,
                        mfc=colours[method] if complete[i] else "white")
        ax.set_title(f"{metric}{' (×100)' if s != 1 else ''}{' ↓' if metric in lower else ''}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, labels)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[m], label=m) for m in methods]
    handles.append(plt.Line2D([], [], marker="o", ls="", color="grey", mfc="white", label="incomplete"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 5),
               frameon=False)
    title = f"{section.dataset}, {section.task}: mean ± std over seeds (protocol {section.protocol_version})"
    fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _save(fig, path)
    return f"{section.dataset}: metrics per configuration (mean ± sample std over seeds; hollow = incomplete)"


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
    """Heat map of the explored grid: divergence x method (or p kernel x q kernel when those vary).

    Each cell holds the best mean of the primary metric (the smallest if it is in `lower`) among its
    configurations; grey cells were not run. Axes cover every name run under this protocol version
    (and registered ones, if known).
    """
    if not section.metrics or section.table.empty:
        return None
    metric = section.metrics[0]
    vrows = all_rows[(all_rows["protocol_version"] == section.protocol_version) & (all_rows["split"] == section.split)]
    comps = dict(zip(vrows["config_id"], vrows["components"])) if "components" in vrows else {}
    table = section.table.copy()
    table["_p"] = [_kernel_name(s, comps.get(c), "p") for s, c in zip(table["spec"], table["config_id"])]
    table["_q"] = [_kernel_name(s, comps.get(c), "q") for s, c in zip(table["spec"], table["config_id"])]
    # Kernels set in the suite itself (spec p.name / q.name) make the grid p x q; kernels that merely
    # differ because the methods differ do not.
    explicit = any(f"{side}.name" in flatten_spec(s) for s in table["spec"] for side in ("p", "q"))
    if explicit and (table["_p"].nunique(dropna=True) > 1 or table["_q"].nunique(dropna=True) > 1):
        row_key, col_key, row_title, col_title = "_p", "_q", "p kernel", "q kernel"
        table["_p"] = table["_p"].fillna("default")
        table["_q"] = table["_q"].fillna("default")
        kernels = known.get("kernel", [])
        rows_axis = list(dict.fromkeys(list(table["_p"]) + kernels))
        cols_axis = list(dict.fromkeys(list(table["_q"]) + kernels))
    else:
        row_key, col_key, row_title, col_title = "divergence", "method", "divergence", "method"
        all_div = [d for d in dict.fromkeys(vrows["divergence"])]
        all_met = [m for m in dict.fromkeys(vrows["method"])]
        rows_axis = list(dict.fromkeys(all_div + [d for d in known.get("divergence", []) if d not in all_div]))
        cols_axis = list(dict.fromkeys(all_met + [m for m in known.get("method", []) if m not in all_met]))
    lower_better = metric in lower
    values = np.full((len(rows_axis), len(cols_axis)), np.nan)
    explored = np.zeros_like(values, dtype=bool)
    for rec in table.to_dict("records"):
        i, j = rows_axis.index(rec[row_key]), cols_axis.index(rec[col_key])
        explored[i, j] = True
        v = rec[f"{metric}_mean"]
        if not np.isnan(v) and (np.isnan(values[i, j]) or (v < values[i, j] if lower_better else v > values[i, j])):
            values[i, j] = v
    s = _scale(metric, fractions)
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * len(cols_axis), 1.2 + 0.36 * len(rows_axis)))
    cmap = plt.get_cmap("viridis_r" if lower_better else "viridis").with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values * s), cmap=cmap, aspect="auto")
    finite = values[~np.isnan(values)] * s
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    _annotate_cells(ax, values, explored, s, mid, lower_better)
    ax.set_xticks(range(len(cols_axis)), cols_axis, rotation=35, ha="right")
    ax.set_yticks(range(len(rows_axis)), rows_axis)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    ax.set_xticks(np.arange(-0.5, len(cols_axis), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows_axis), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"best {metric}{' ×100' if s != 1 else ''}")
    ax.set_title(f"{section.dataset}: explored grid, best {metric} per cell", fontsize=10)
    _save(fig, path)
    n_cells = values.size
    return (
        f"{section.dataset}: {row_title} × {col_title} grid — {int(explored.sum())} of {n_cells} cells run; "
        f"best {metric} per cell, grey · = not run"
    )


def _annotate_cells(ax: Any, values: np.ndarray, explored: np.ndarray, s: float, mid: float, lower_better: bool) -> None:
    """Write each grid cell's value (scaled by ``s``), "failed" where every run failed, "·" where none ran."""
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
                ax.text(j, i, "·", ha="center", va="center", fontsize=9, color="#999999")


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
    for ax, (title, emb, labels) in zip(axes.flat, panels):
        colour: Any = "#1f77b4"
        if labels is not None and len(labels) == len(emb):
            # One qualitative colour per class (by rank), not a continuous map over label values.
            classes, index = np.unique(labels, return_inverse=True)
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            colour = cmap(index % cmap.N)
        ax.scatter(emb[:, 0], emb[:, 1], c=colour, s=4, alpha=0.8, linewidths=0)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(f"{section.dataset}: 2-D embeddings coloured by class", fontsize=10, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)
    return f"{section.dataset}: 2-D embeddings (every split) of the best configuration per method, coloured by class"


def _loss(history: Any) -> list[float] | None:
    if isinstance(history, str):
        try:
            history = json.loads(history)
        except json.JSONDecodeError:
            return None
    if not isinstance(history, Mapping):
        return None
    loss = history.get("loss")
    if isinstance(loss, (list, tuple, np.ndarray)) and len(loss) > 0:
        return [float(x) if x is not None else np.nan for x in loss]
    return None


def plot_losses(section: Section, rows: pd.DataFrame, path: Path) -> str | None:
    """Training-loss curves (row["history"]["loss"]) of the best configurations, one line per seed."""
    if "history" not in rows.columns:
        return None
    ok = rows[rows["status"] == "ok"]
    curves = []
    for rec in section.table.to_dict("records"):
        trials = ok[ok["config_id"] == rec["config_id"]].to_dict("records")
        runs = [(r["seed"], _loss(r.get("history"))) for r in trials]
        runs = [(s, c) for s, c in runs if c]
        if runs:
            curves.append((rec["label"], runs))
        if len(curves) >= MAX_CURVES:
            break
    if not curves:
        return None
    colours = _colours([label for label, _ in curves])
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for label, runs in curves:
        for k, (_, curve) in enumerate(runs):
            ax.plot(np.arange(1, len(curve) + 1), curve, color=colours[label], lw=1.4, alpha=0.85,
                    label=label if k == 0 else None)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{section.dataset}: training loss (one line per seed)", fontsize=10)
    _save(fig, path)
    return f"{section.dataset}: training-loss curves of the {len(curves)} best configurations, one line per seed"
