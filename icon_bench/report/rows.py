"""Result rows as a pandas frame: loading, normalising (split, dataset label), flattening specs, metric kinds, config labels."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.data.options import dataset_label
from icon_bench.errors import DataError
from icon_bench.report.model import (
    _LABEL_SKIP,
    FRACTION_METRICS,
    LOWER_IS_BETTER_PARTS,
    METRIC_PREFIX,
)
from icon_bench.report.roles import _get, _is_missing, _tune_columns, _unflatten
from icon_bench.run.execution.labels import component_label

#: Columns of each metric's label-permutation baseline (a row's ``chance``, evaluation/health.py).
CHANCE_PREFIX = "chance."


def results_file(results: str | Path) -> Path:
    """The results.jsonl inside `results` (a results directory), its report's results.parquet, or `results` (a file).

    A report folder (which holds results.parquet, the rows it was made from) can be read back, so a
    committed report is regenerated from its own rows without rerunning them.
    """
    path = Path(results)
    if path.is_dir():
        path = path / "results.jsonl" if not (path / "results.parquet").is_file() or (path / "results.jsonl").is_file() \
            else path / "results.parquet"
    if not path.is_file():
        raise DataError(f"no results file at {path} (give a results directory, its results.jsonl, or a report "
                        "folder holding results.parquet)")
    return path


def load_rows(results: str | Path) -> pd.DataFrame:
    """Read result rows into a DataFrame, one column per top-level key of the row.

    A results.jsonl goes through the store's one tolerant reader (`run.store.read_rows`: checksums,
    torn, non-UTF-8 and wrong-schema lines skipped with a warning, one row per trial); a report's
    results.parquet (or results.json) is read as written.
    """
    from icon_bench.run.execution.store import read_rows

    path = results_file(results)
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
        for col in df.columns:  # integer columns with gaps (written as Int64): Python ints and None, as rows hold them
            if isinstance(df[col].dtype, pd.Int64Dtype):
                df[col] = pd.Series([None if pd.isna(v) else int(v) for v in df[col]], index=df.index, dtype=object)
        return df
    if path.suffix.lower() == ".json":  # a report's flattened rows when parquet could not hold them
        return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path} holds no result rows")
    # Plain json + DataFrame rather than read_json: read_json would coerce hex ids such as
    # "1234567890123456" to numbers.
    return pd.DataFrame(rows)


def _name_of(value: Any) -> str:
    """A component given as "name", {"name": ...} or None, as display text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    if isinstance(value, Mapping):
        name = str(value.get("name", "?"))
        params = {k: v for k, v in value.items() if k != "name"}
        return name + (json.dumps(params, sort_keys=True) if params else "")
    return str(value)


def normalise_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns from rows read as nested dicts (`load_rows`) or flattened (json_normalize).

    Adds `protocol_version` (str), `split` ("test" for rows that predate it), `status`, `suite`,
    `divergence` (display text), `dataset` (the dataset's label, what tables group by; the
    registered name moves to `dataset_name`) and one float column `metrics.<name>` per metric;
    drops duplicate trials (per protocol version), keeping the latest row of each (rows from `load_rows`
    are already one per trial: the store's reader chose the row that counts).
    """
    df = df.copy().reset_index(drop=True)
    for nested, prefix in (("metrics", METRIC_PREFIX), ("chance", CHANCE_PREFIX)):
        if nested in df.columns:
            values = pd.json_normalize([m if isinstance(m, Mapping) else {} for m in df[nested]])
            values.columns = [prefix + str(c) for c in values.columns]
            df = pd.concat([df.drop(columns=[c for c in values.columns if c in df.columns]), values], axis=1)
    if "protocol.version" in df.columns:
        versions = df["protocol.version"]
    elif "protocol" in df.columns:
        versions = pd.Series([_get(p, "version") for p in df["protocol"]], index=df.index)
    else:
        versions = pd.Series([None] * len(df), index=df.index)
    df["protocol_version"] = ["unversioned" if _is_missing(v) else str(v) for v in versions]
    if "history" not in df.columns and any(c.startswith("history.") for c in df.columns):
        # A report's results.parquet holds history.loss, history.grad_norm, ...: one dict per row again.
        cols = [c for c in df.columns if c.startswith("history.")]
        df["history"] = [{c[8:]: _as_list(r[c]) for c in cols if _as_list(r[c]) is not None} for _, r in df[cols].iterrows()]
    for group in _NESTED:  # the same for the row's other records (versions, protocol, data, ...)
        cols = [c for c in df.columns if c.startswith(group + ".")]
        if group not in df.columns and cols:
            df[group] = [_unflatten({c[len(group) + 1:]: _int_if_whole(v) for c, v in zip(cols, r)
                                     if not _is_missing(v)}) for r in df[cols].itertuples(index=False)]
    if "spec" not in df.columns:
        spec_cols = [c for c in df.columns if c.startswith("spec.")]
        # Values as parquet holds them: an integer column with gaps reads back as floats (epochs 10.0);
        # a float setting such as p.debias 0.0 must stay one, so labels match the rows' own.
        df["spec"] = [_unflatten({c[5:]: r[c] for c in spec_cols if not _is_missing(r[c])}) for _, r in df.iterrows()]
    for col, default in (("suite", ""), ("status", "ok"), ("error", None), ("seed", None)):
        if col not in df.columns:
            df[col] = default
    # Rows written before trials checked their health carry no warnings: an empty list, like a sane trial.
    df["warnings"] = [warning_list(w) for w in df["warnings"]] if "warnings" in df.columns else [[]] * len(df)
    df["suite"] = df["suite"].map(lambda s: "" if _is_missing(s) else str(s))
    if "method" not in df.columns:
        df["method"] = [_get(s, "method") for s in df["spec"]]
    if "dataset" not in df.columns:
        df["dataset"] = [_get(s, "dataset", "name") or _get(s, "dataset") for s in df["spec"]]
    df["method"] = df["method"].map(lambda v: _name_of(v))
    df["dataset_name"] = df["dataset"].map(lambda v: _name_of(v))
    df["dataset"] = _dataset_labels(df)
    df["split"] = [
        str(s) if not _is_missing(s) else str(_get(spec, "split") or "test")
        for s, spec in zip(df["split"] if "split" in df.columns else [None] * len(df), df["spec"])
    ]
    if "divergence" not in df.columns:
        df["divergence"] = [_get(s, "divergence") for s in df["spec"]]
    df["divergence"] = df["divergence"].map(_name_of)
    if "config_id" not in df.columns:
        df["config_id"] = [_fallback_id({k: v for k, v in (s or {}).items() if k != "seed"}) for s in df["spec"]]
    if "trial_id" not in df.columns:
        df["trial_id"] = [_fallback_id(s) for s in df["spec"]]
    for col in [c for c in df.columns if c.startswith((METRIC_PREFIX, CHANCE_PREFIX))]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    _tune_columns(df)
    # Frames not read by load_rows may repeat a trial: the latest row wins (a retry follows its failure).
    df["_order"] = np.arange(len(df))
    df = df.drop_duplicates(["protocol_version", "trial_id"], keep="last")
    # A tuned configuration has one test row per seed: a later selection (after --retry-failed) replaces it.
    finals = df[df["tune_role"] == "final"]
    df = df.drop(finals.index[finals.duplicated(["protocol_version", "config_id", "seed"], keep="last")])
    return df.sort_values("_order").drop(columns=["_order"]).reset_index(drop=True)


#: A row's nested records that a flattened results.parquet holds as dotted columns.
_NESTED = ("versions", "protocol", "data", "components", "info", "timings", "recipe", "peak_memory_mb")


def _int_if_whole(value: Any) -> Any:
    """10.0 -> 10: parquet widens an integer column that has gaps to floats; the rows held integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def _as_list(value: Any) -> list | None:
    """A history column's cell (a list, an array or JSON text) as a list; None when missing."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return None


def _dataset_labels(df: pd.DataFrame) -> list[str]:
    """Each row's dataset label: the one it recorded, else one recorded by a row of the same dataset entry.

    A trial that failed before its data loaded recorded a label without the content hash; it takes
    the label of a row that ran on the same entry, so it lands in that dataset's table.
    """
    recorded = df["dataset_label"] if "dataset_label" in df.columns else pd.Series([None] * len(df), index=df.index)
    entries = [json.dumps(_get(s, "dataset"), sort_keys=True, default=str) for s in df["spec"]]
    hashed = df["data"] if "data" in df.columns else pd.Series([None] * len(df), index=df.index)
    known: dict[str, str] = {}
    for entry, label, data in zip(entries, recorded, hashed):
        if not _is_missing(label) and _get(data, "raw_content_hash"):
            known.setdefault(entry, str(label))
    out = []
    for entry, label, spec, name in zip(entries, recorded, df["spec"], df["dataset_name"]):
        if entry in known:
            out.append(known[entry])
        elif not _is_missing(label):
            out.append(str(label))
        else:  # rows written before labels existed
            ds = _get(spec, "dataset")
            out.append(dataset_label(ds) if isinstance(ds, (Mapping, str)) else name)
    return out
def warning_list(value: Any) -> list[str]:
    """A row's ``warnings`` as a list of strings, whether a list, an array, JSON text (parquet) or missing."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [value] if value else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(w) for w in value]
    return []


def warning_kinds(warnings: Iterable[str]) -> list[str]:
    """``["diverged: loss rose ...", ...]`` -> ``["diverged", ...]`` (distinct, in order)."""
    return list(dict.fromkeys(str(w).split(":", 1)[0].strip() for w in warnings))


def _fallback_id(spec: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    """Short name of a configuration: method, divergence (with its parameters: alpha(a=0.5)), then `varying` keys."""
    spec = spec or {}
    flat = flatten_spec(spec)
    parts = [_name_of(spec.get("method"))]
    if isinstance(spec.get("divergence"), Mapping) and len(spec["divergence"]) > 1:
        parts.append(component_label(spec["divergence"]))  # its parameters tell configurations apart
    elif divergence and divergence != "default":
        parts.append(divergence)
    elif spec.get("divergence") is not None:
        parts.append(_name_of(spec.get("divergence")))
    for key in varying:
        if key == "method" or key == "divergence" or key.startswith("divergence."):
            continue
        if key in flat:
            parts.append(f"{key}={flat[key]}")
    return " · ".join(parts)


def varying_keys(specs: Iterable[Any]) -> list[str]:
    """Flattened spec keys (minus seed/evaluate) whose value differs between `specs`, in first-seen order."""
    flats = [flatten_spec(s if isinstance(s, Mapping) else {}) for s in specs]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and k.split(".")[0] not in _LABEL_SKIP]
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
