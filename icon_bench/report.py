"""Aggregation of result rows over seeds, ranking with bootstrap intervals, and `icon-bench report`/`leaderboard`."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.errors import DataError, IconBenchError

#: The guess for rows that do not declare their metrics (evaluation.Metric.fraction / higher_is_better):
#: built-in metrics whose values are fractions, shown x100 with one decimal.
FRACTION_METRICS: frozenset[str] = frozenset(
    {"hungarian", "nmi", "ari", "linear_probe", "knn", "knn2d", "trustworthiness"}
)
#: Metric names (or name parts) for which a lower value is better; every other metric is maximised.
LOWER_IS_BETTER_PARTS: tuple[str, ...] = ("loss", "error", "time", "seconds", "_s")
#: Tasks of the cross-suite index and their metrics, the first present one deciding "best".
TASKS: dict[str, tuple[str, ...]] = {
    "clustering": ("hungarian", "nmi", "ari"),
    "representation": ("linear_probe", "knn"),
    "dimensionality reduction": ("knn2d", "trustworthiness"),
}
#: Spec keys that never make two configurations different in a way worth a column.
_LABEL_SKIP = ("seed", "evaluate")
METRIC_PREFIX = "metrics."


@dataclass
class Section:
    """One leaderboard table: the configurations of one dataset under one protocol version."""

    protocol_version: str
    dataset: str
    table: pd.DataFrame  # rows of `aggregate`, sorted by the primary metric (best first)
    metrics: list[str]  # metric names present, in evaluation order; metrics[0] is the primary one
    varying: list[str]  # flattened spec keys that differ between the configurations
    seeds: list[Any]  # every seed run for this dataset (ok or failed)
    task: str = ""  # what the table's metrics measure: clustering, representation, ...
    plots: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)


@dataclass
class Report:
    """Everything the writers need: rows, aggregated sections, failures, and provenance."""

    rows: pd.DataFrame  # deduplicated rows, normalised columns (see `normalise_rows`)
    aggregated: pd.DataFrame  # `aggregate(rows)`
    sections: list[Section]
    failed: pd.DataFrame  # failed trials: trial_id, config_id, label, method, dataset, seed, error
    configs: dict[str, dict]  # config_id -> spec without seed
    protocols: dict[str, list[dict]]  # protocol version -> distinct settings seen
    # title, icon-bench versions, plugins, git commits, dates; fraction_metrics and lower_is_better (the
    # single answer to how each metric is shown and ranked, see `metric_kinds`)
    meta: dict[str, Any]
    results_dir: Path
    resamples: int = 1000


# ----------------------------------------------------------------------------------------------
# Loading and normalising rows
# ----------------------------------------------------------------------------------------------


def results_file(results: str | Path) -> Path:
    """The results.jsonl inside `results` (a results directory), or `results` itself (a file)."""
    path = Path(results)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise DataError(f"no results file at {path} (give a results directory or its results.jsonl)")
    return path


def load_rows(results: str | Path) -> pd.DataFrame:
    """Read result rows (JSON Lines) into a DataFrame, one column per top-level key of the row."""
    path = results_file(results)
    rows: list[dict] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                # An interrupted run can leave a torn last line; the rest of the store is still good.
                warnings.warn(f"{path}:{lineno}: skipping unreadable row ({exc})", stacklevel=2)
                continue
            if isinstance(row, dict):
                rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no result rows")
    # Plain json + DataFrame rather than read_json: read_json would coerce hex ids such as
    # "1234567890123456" to numbers.
    return pd.DataFrame(rows)


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _name_of(value: Any) -> str:
    """A component given as "name", {"name": ...} or None, as display text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    if isinstance(value, Mapping):
        name = str(value.get("name", "?"))
        params = {k: v for k, v in value.items() if k != "name"}
        return name + (json.dumps(params, sort_keys=True) if params else "")
    return str(value)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def normalise_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns from rows read as nested dicts (`load_rows`) or flattened (json_normalize).

    Adds `protocol_version` (str), `status`, `suite`, `divergence` (display text) and one float
    column `metrics.<name>` per metric; drops duplicate trials (per protocol version), keeping the
    latest row of each, as the results store does.
    """
    df = df.copy().reset_index(drop=True)
    if "metrics" in df.columns:
        metrics = pd.json_normalize([m if isinstance(m, Mapping) else {} for m in df["metrics"]])
        metrics.columns = [METRIC_PREFIX + str(c) for c in metrics.columns]
        df = pd.concat([df.drop(columns=[c for c in metrics.columns if c in df.columns]), metrics], axis=1)
    if "protocol.version" in df.columns:
        versions = df["protocol.version"]
    elif "protocol" in df.columns:
        versions = pd.Series([_get(p, "version") for p in df["protocol"]], index=df.index)
    else:
        versions = pd.Series([None] * len(df), index=df.index)
    df["protocol_version"] = ["unversioned" if _is_missing(v) else str(v) for v in versions]
    if "spec" not in df.columns:
        spec_cols = [c for c in df.columns if c.startswith("spec.")]
        df["spec"] = [_unflatten({c[5:]: r[c] for c in spec_cols if not _is_missing(r[c])}) for _, r in df.iterrows()]
    for col, default in (("suite", ""), ("status", "ok"), ("error", None), ("seed", None)):
        if col not in df.columns:
            df[col] = default
    df["suite"] = df["suite"].map(lambda s: "" if _is_missing(s) else str(s))
    if "method" not in df.columns:
        df["method"] = [_get(s, "method") for s in df["spec"]]
    if "dataset" not in df.columns:
        df["dataset"] = [_get(s, "dataset", "name") or _get(s, "dataset") for s in df["spec"]]
    df["method"] = df["method"].map(lambda v: _name_of(v))
    df["dataset"] = df["dataset"].map(lambda v: _name_of(v))
    if "divergence" not in df.columns:
        df["divergence"] = [_get(s, "divergence") for s in df["spec"]]
    df["divergence"] = df["divergence"].map(_name_of)
    if "config_id" not in df.columns:
        df["config_id"] = [_fallback_id({k: v for k, v in (s or {}).items() if k != "seed"}) for s in df["spec"]]
    if "trial_id" not in df.columns:
        df["trial_id"] = [_fallback_id(s) for s in df["spec"]]
    for col in [c for c in df.columns if c.startswith(METRIC_PREFIX)]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    # As in the store, the latest row of a trial wins (a resumed run appends the retry of a failure).
    df["_order"] = np.arange(len(df))
    df = df.drop_duplicates(["protocol_version", "trial_id"], keep="last")
    return df.sort_values("_order").drop(columns=["_order"]).reset_index(drop=True)


def _fallback_id(spec: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def flatten_spec(spec: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a spec: {"p": {"debias": 0.6}} -> {"p.debias": 0.6}; lists become JSON text."""
    out: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        if not spec and prefix:
            return out
        for key, value in spec.items():
            out.update(flatten_spec(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    out[key] = json.dumps(spec) if isinstance(spec, (list, tuple)) else spec
    return out


def metric_names(df: pd.DataFrame) -> list[str]:
    """Metric names in the order they first appear in the rows (the suites' `evaluate` order)."""
    return [c[len(METRIC_PREFIX):] for c in df.columns if c.startswith(METRIC_PREFIX)]


def metric_kinds(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(fraction metrics, lower-is-better metrics) among the metrics of normalised `rows`.

    A metric's declaration in the rows' ``protocol.metrics`` wins, the latest row's where rows
    disagree; a metric that no row declares (rows written before declarations existed) is guessed
    from its name and values (`is_fraction`, `lower_is_better`).
    """
    declared = _declarations(rows)
    fractions, lower = [], []
    for m in metric_names(rows):
        kind = declared.get(m, {})
        if kind.get("fraction", is_fraction(m, rows[METRIC_PREFIX + m])):
            fractions.append(m)
        if not kind.get("higher_is_better", not lower_is_better(m)):
            lower.append(m)
    return fractions, lower


def _declarations(rows: pd.DataFrame) -> dict[str, dict[str, bool]]:
    """metric -> {"higher_is_better", "fraction"} from each row's protocol.metrics, later rows overriding."""
    if "protocol" in rows.columns:
        per_row = [_get(p, "metrics") for p in rows["protocol"]]
    elif "protocol.metrics" in rows.columns:  # json_normalize(max_level=1)
        per_row = list(rows["protocol.metrics"])
    else:  # fully flattened: protocol.metrics.<metric>.<attribute>
        prefix = "protocol.metrics."
        cols = [c for c in rows.columns if c.startswith(prefix) and "." in c[len(prefix):]]
        per_row = [{} for _ in range(len(rows))]
        for col in cols:
            metric, attr = col[len(prefix):].rsplit(".", 1)
            for kinds, value in zip(per_row, rows[col]):
                if not _is_missing(value):
                    kinds.setdefault(metric, {})[attr] = value
    out: dict[str, dict[str, bool]] = {}
    for kinds in per_row:
        for metric, kind in (kinds.items() if isinstance(kinds, Mapping) else ()):
            for attr in ("higher_is_better", "fraction"):
                value = _get(kind, attr)
                if isinstance(value, (bool, np.bool_)):
                    out.setdefault(str(metric), {})[attr] = bool(value)
    return out


def is_fraction(metric: str, values: Iterable[float] = ()) -> bool:
    """Guess for undeclared metrics: shown x100 if a built-in fraction metric, or its values all lie in [-1, 1]."""
    if metric in FRACTION_METRICS:
        return True
    vals = [v for v in values if not _is_missing(v)]
    return bool(vals) and all(-1.0 <= v <= 1.0 for v in vals) and not lower_is_better(metric)


def lower_is_better(metric: str) -> bool:
    """Guess for undeclared metrics: whether a smaller value ranks first (losses, errors, timings)."""
    return any(part in metric.lower() for part in LOWER_IS_BETTER_PARTS) and metric not in FRACTION_METRICS


# ----------------------------------------------------------------------------------------------
# Aggregation and ranking
# ----------------------------------------------------------------------------------------------


def _seed_key(seed: Any) -> Any:
    if _is_missing(seed):
        return None
    try:
        return int(seed)
    except (TypeError, ValueError):
        return str(seed)


def _sorted_seeds(seeds: Iterable[Any]) -> list[Any]:
    return sorted({s for s in seeds if s is not None}, key=lambda s: (isinstance(s, str), s))


def config_label(spec: Mapping[str, Any] | None, varying: Iterable[str], divergence: str | None = None) -> str:
    """Short name of a configuration: method, divergence (the resolved one if given), then `varying` keys."""
    spec = spec or {}
    flat = flatten_spec(spec)
    parts = [_name_of(spec.get("method"))]
    if divergence and divergence != "default":
        parts.append(divergence)
    elif spec.get("divergence") is not None:
        parts.append(_name_of(spec.get("divergence")))
    for key in varying:
        if key == "method" or key == "divergence" or key.startswith("divergence."):
            continue
        if key in flat:
            parts.append(f"{key}={flat[key]}")
    return " · ".join(parts)


def aggregate(
    rows_df: pd.DataFrame, *, resamples: int = 1000, seed: int = 0, lower: Iterable[str] | None = None
) -> pd.DataFrame:
    """Per configuration (config_id) and protocol version: mean, sample std and n of each metric over seeds.

    One output row per (protocol_version, dataset, config_id) with columns protocol_version, dataset,
    config_id, suite, method, divergence, label, seeds (ok seeds), expected_seeds (every seed run
    for the suite(s) and dataset), missing_seeds, failed_seeds, n, n_expected, complete, and per
    metric `<m>_mean`, `<m>_std` (ddof=1; NaN when n < 2), `<m>_n`, plus `<m>_rank`, `<m>_rank_lo`,
    `<m>_rank_hi` from `resamples` bootstrap resamples over seeds (0 to skip ranking); metrics in
    `lower` rank smallest first (default: `metric_kinds` of the rows).
    Failed trials never enter a mean; they make their configuration incomplete.
    """
    df = normalise_rows(rows_df)
    metrics = metric_names(df)
    lower = set(metric_kinds(df)[1] if lower is None else lower)
    df["_seed"] = df["seed"].map(_seed_key)
    # Seeds run per (protocol, suite, dataset): what every configuration there is expected to have.
    run_seeds = df.groupby(["protocol_version", "suite", "dataset"])["_seed"].agg(lambda s: set(s) - {None})
    out: list[dict[str, Any]] = []
    for (version, dataset, cid), group in df.groupby(["protocol_version", "dataset", "config_id"], sort=False):
        ok = group[group["status"] == "ok"]
        bad = group[group["status"] != "ok"]
        suites = sorted(set(group["suite"]))
        expected: set = set()
        for suite in suites:
            expected |= run_seeds.get((version, suite, dataset), set())
        ok_seeds = set(ok["_seed"]) - {None}
        failed_seeds = set(bad["_seed"]) - {None} - ok_seeds
        missing = expected - ok_seeds - failed_seeds
        spec = group["spec"].iloc[0] if isinstance(group["spec"].iloc[0], Mapping) else {}
        rec: dict[str, Any] = {
            "protocol_version": version,
            "dataset": dataset,
            "config_id": cid,
            "suite": ", ".join(s for s in suites if s),
            "method": group["method"].iloc[0],
            "divergence": group["divergence"].iloc[0],
            "spec": {k: v for k, v in spec.items() if k != "seed"},
            "seeds": _sorted_seeds(ok_seeds),
            "expected_seeds": _sorted_seeds(expected),
            "missing_seeds": _sorted_seeds(missing),
            "failed_seeds": _sorted_seeds(failed_seeds),
            "n": len(ok),
            "n_expected": max(len(expected), len(group)),
        }
        rec["complete"] = bool(rec["n"] >= rec["n_expected"] and not failed_seeds and not missing)
        for m in metrics:
            vals = ok[METRIC_PREFIX + m].dropna().to_numpy(dtype=float)
            rec[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            rec[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            rec[f"{m}_n"] = int(len(vals))
            rec[f"_{m}_values"] = vals
        out.append(rec)
    agg = pd.DataFrame(out)
    if agg.empty:
        return agg
    agg["label"] = ""
    for m in metrics:
        for suffix in ("_rank", "_rank_lo", "_rank_hi"):
            agg[f"{m}{suffix}"] = pd.Series(pd.NA, index=agg.index, dtype="Int64")
    for (version, dataset), idx in agg.groupby(["protocol_version", "dataset"], sort=False).groups.items():
        # A label names only what tells configurations of one method apart (not, say, the epochs
        # that differ between methods anyway).
        for _, sub in agg.loc[idx].groupby("method", sort=False):
            varying = varying_keys(sub["spec"])
            agg.loc[sub.index, "label"] = [
                config_label(s, varying, d) for s, d in zip(sub["spec"], sub["divergence"])
            ]
        for m in metrics:
            ranks = bootstrap_ranks(
                [agg.at[i, f"_{m}_values"] for i in idx], m in lower, resamples=resamples, seed=seed
            )
            for k, suffix in enumerate(("_rank", "_rank_lo", "_rank_hi")):
                agg.loc[idx, f"{m}{suffix}"] = pd.array([r[k] for r in ranks], dtype="Int64")
    return agg.drop(columns=[f"_{m}_values" for m in metrics])


def varying_keys(specs: Iterable[Any]) -> list[str]:
    """Flattened spec keys (minus seed/evaluate) whose value differs between `specs`, in first-seen order."""
    flats = [flatten_spec(s if isinstance(s, Mapping) else {}) for s in specs]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and k.split(".")[0] not in _LABEL_SKIP]
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


def bootstrap_ranks(
    values: list[np.ndarray], lower_better: bool = False, *, resamples: int = 1000, seed: int = 0
) -> list[tuple[int | None, int | None, int | None]]:
    """(rank of the mean, 2.5 % and 97.5 % rank bounds) per configuration, bootstrapping each one's seeds.

    Each resample draws, for every configuration, as many seed values as it has (with replacement)
    and ranks the resampled means (1 = best, ties share the best rank). Overlapping intervals mean
    the configurations are not separable at this number of seeds. Empty configurations get None.
    """
    present = [i for i, v in enumerate(values) if len(v)]
    result: list[tuple[int | None, int | None, int | None]] = [(None, None, None)] * len(values)
    if not present:
        return result
    sign = 1.0 if lower_better else -1.0  # rank ascending on sign * mean
    means = np.array([values[i].mean() for i in present]) * sign
    point = _min_ranks(means[None, :])[0]
    if resamples <= 0:
        for k, i in enumerate(present):
            result[i] = (int(point[k]), None, None)
        return result
    rng = np.random.default_rng(seed)
    boot = np.empty((resamples, len(present)))
    for k, i in enumerate(present):
        vals = values[i]
        idx = rng.integers(0, len(vals), size=(resamples, len(vals)))
        boot[:, k] = vals[idx].mean(axis=1) * sign
    ranks = _min_ranks(boot)
    lo = np.floor(np.percentile(ranks, 2.5, axis=0)).astype(int)
    hi = np.ceil(np.percentile(ranks, 97.5, axis=0)).astype(int)
    for k, i in enumerate(present):
        result[i] = (int(point[k]), int(min(lo[k], point[k])), int(max(hi[k], point[k])))
    return result


def _min_ranks(matrix: np.ndarray) -> np.ndarray:
    """Competition ranks along axis 1 (1 + number of strictly smaller entries)."""
    from scipy.stats import rankdata

    return rankdata(matrix, axis=1, method="min").astype(int)


# ----------------------------------------------------------------------------------------------
# Building a report
# ----------------------------------------------------------------------------------------------


def build_report(results: str | Path, *, resamples: int = 1000, seed: int = 0) -> Report:
    """Load, deduplicate and aggregate the rows of one results store into a `Report`."""
    path = results_file(results)
    rows = normalise_rows(load_rows(path))
    # Decided once here; aggregation, sorting, the writers and the plots all read these lists.
    fractions, lower = metric_kinds(rows)
    agg = aggregate(rows, resamples=resamples, seed=seed, lower=lower)
    all_metrics = metric_names(rows)
    sections: list[Section] = []
    for version in sorted(set(rows["protocol_version"]), key=_version_key):
        vrows = rows[rows["protocol_version"] == version]
        for dataset in _unique(vrows["dataset"]):
            table = agg[(agg["protocol_version"] == version) & (agg["dataset"] == dataset)]
            seeds = _sorted_seeds(vrows.loc[vrows["dataset"] == dataset, "seed"].map(_seed_key))
            for metrics, group in _metric_groups(table, all_metrics):
                if metrics:
                    primary = metrics[0]
                    group = group.sort_values(
                        [f"{primary}_rank", f"{primary}_mean"], ascending=[True, primary in lower],
                        na_position="last", kind="stable",
                    )
                sections.append(
                    Section(
                        protocol_version=version,
                        dataset=dataset,
                        table=group.reset_index(drop=True),
                        metrics=metrics,
                        varying=varying_keys(group["spec"]),
                        seeds=seeds,
                        task=task_of(metrics),
                    )
                )
    label_of = {(r.protocol_version, r.dataset, r.config_id): r.label for r in agg.itertuples()}
    failed = rows[rows["status"] != "ok"].copy()
    failed["label"] = [
        label_of.get((r.protocol_version, r.dataset, r.config_id), r.method) for r in failed.itertuples()
    ]
    failed["error"] = failed["error"].map(_first_line)
    failed = failed[["protocol_version", "trial_id", "config_id", "label", "method", "dataset", "seed", "error"]]
    configs = {}
    for cid, spec in zip(rows["config_id"], rows["spec"]):
        if cid not in configs:
            configs[cid] = {k: v for k, v in (spec or {}).items() if k != "seed"} if isinstance(spec, Mapping) else {}
    protocols: dict[str, list[dict]] = {}
    for version, proto in zip(rows["protocol_version"], rows.get("protocol", [None] * len(rows))):
        settings = _get(proto, "settings") or {}
        seen = protocols.setdefault(version, [])
        if settings not in seen:
            seen.append(settings)
    protocols = {v: _merge_settings(ss) for v, ss in protocols.items()}
    meta = _provenance(rows, path)
    meta["fraction_metrics"] = fractions
    meta["lower_is_better"] = lower
    return Report(rows, agg, sections, failed.reset_index(drop=True), configs, protocols, meta, path.parent, resamples)


def _merge_settings(settings: list[dict]) -> list[dict]:
    """One dict when the rows' settings agree on every shared key (rows list only the metrics they ran)."""
    merged: dict = {}
    for entry in settings:
        for key, value in entry.items():
            if key in merged and merged[key] != value:
                return settings  # a real disagreement inside one version: show every variant
            merged[key] = value
    return [merged]


def _metric_groups(table: pd.DataFrame, all_metrics: list[str]) -> list[tuple[list[str], pd.DataFrame]]:
    """Split one dataset's configurations by task (clustering vs 2-D maps, ...), from the metrics they report.

    A configuration without any metric (every trial failed) joins the first table, so it is still seen.
    """
    present = [[m for m in all_metrics if rec.get(f"{m}_n", 0)] for rec in table.to_dict("records")]
    tasks = [task_of(ms) if ms else None for ms in present]
    first_metric = {}
    for task, ms in zip(tasks, present):
        if task is not None:
            first_metric.setdefault(task, all_metrics.index(ms[0]))
    order = sorted(first_metric, key=first_metric.get)
    if not order:
        return [([], table)]
    groups = []
    for k, task in enumerate(order):
        mask = [t == task or (k == 0 and t is None) for t in tasks]
        metrics = [m for m in all_metrics if any(m in ms for ms, keep in zip(present, mask) if keep)]
        groups.append((metrics, table[mask]))
    return groups


def task_of(metrics: list[str]) -> str:
    """The task a table's metrics belong to (clustering, representation, ...), else its metric names."""
    for task, names in TASKS.items():
        if metrics and metrics[0] in names:
            return task
    return ", ".join(metrics) or "no metrics"


def _version_key(version: str) -> tuple:
    try:
        return (0, float(version), version)
    except ValueError:
        return (1, 0.0, version)


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _first_line(error: Any) -> str:
    if _is_missing(error) or not str(error).strip():
        return "(no error message)"
    return str(error).strip().splitlines()[0]


def _provenance(rows: pd.DataFrame, path: Path) -> dict[str, Any]:
    from icon_bench import __version__

    def collect(column: str, *keys: str) -> list[str]:
        if column not in rows.columns:
            return []
        return sorted({str(v) for v in (_get(x, *keys) if keys else x for x in rows[column]) if not _is_missing(v)})

    plugins: dict[str, set[str]] = {}
    for versions in rows.get("versions", []):
        for dist, ver in (_get(versions, "plugins") or {}).items():
            plugins.setdefault(str(dist), set()).add(str(ver))
    suites = sorted({s for s in rows["suite"] if s})
    started = collect("started_at")
    finished = collect("finished_at")
    return {
        "title": ", ".join(suites) or path.parent.name or "results",
        "suites": suites,
        "source": str(path),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "report_icon_bench": __version__,
        "icon_bench": collect("versions", "icon_bench"),
        "torch": collect("versions", "torch"),
        "python": collect("versions", "python"),
        "plugins": {dist: sorted(vs) for dist, vs in sorted(plugins.items())},
        "git_commits": collect("git_commit"),
        "devices": collect("device"),
        "run_from": started[0] if started else None,
        "run_to": finished[-1] if finished else None,
        "n_rows": int(len(rows)),
        "n_ok": int((rows["status"] == "ok").sum()),
        "n_failed": int((rows["status"] != "ok").sum()),
    }


def write_report(results: str | Path, out_dir: str | Path, *, resamples: int = 1000, plots: bool = True) -> Path:
    """Write leaderboard.md, leaderboard.csv, results.parquet (or .json), plots and index.html; return out_dir."""
    from icon_bench import leaderboard
    from icon_bench import plots as plotting

    report = build_report(results, resamples=resamples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A report folder is rewritten whole: figures and row dumps of an earlier report must not linger.
    for pattern in ("metrics-*.png", "grid-*.png", "embedding-*.png", "loss-*.png", "results.parquet", "results.json"):
        for stale in out.glob(pattern):
            stale.unlink()
    if plots:
        plotting.make_plots(report, out)
    leaderboard.write_rows(report, out)
    leaderboard.write_csv(report, out / "leaderboard.csv")
    leaderboard.write_markdown(report, out / "leaderboard.md")
    leaderboard.write_html(report, out / "index.html")
    return out


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `icon-bench report` and `icon-bench leaderboard` to the CLI."""
    p = subparsers.add_parser("report", help="aggregate a results store into leaderboards, plots and a web page")
    p.add_argument("results", help="a results directory (holding results.jsonl) or the results.jsonl file")
    p.add_argument("-o", "--output", help="report folder (default: reports/<suite name>)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for rank intervals")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("leaderboard", help="build reports/README.md indexing every suite's report")
    p.add_argument("reports", nargs="?", default="reports", help="folder holding one subfolder per suite report")
    p.set_defaults(func=cmd_leaderboard)


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of `icon-bench report`."""
    out = args.output
    if not out:
        rows = normalise_rows(load_rows(args.results))
        suites = sorted({s for s in rows["suite"] if s})
        name = suites[0] if len(suites) == 1 else results_file(args.results).parent.name
        out = Path("reports") / _safe_dir_name(name or "results")
    if args.resamples < 0:
        raise IconBenchError("--resamples must be 0 or more")
    path = write_report(args.results, out, resamples=args.resamples, plots=not args.no_plots)
    print(f"report written to {path}/ (index.html, leaderboard.md, leaderboard.csv)")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Handler of `icon-bench leaderboard`."""
    from icon_bench import leaderboard

    path = leaderboard.build_index(args.reports)
    print(f"index written to {path}")
    return 0


def _safe_dir_name(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "results"
