"""Rows to a `Report`: per-configuration means over seeds, rank bands from paired tests, sections, provenance."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icon_bench.report.discovered import load_discovery
from icon_bench.report.model import DEFAULTS, METRIC_PREFIX, TASKS, Report, Section
from icon_bench.report.references import Reference, load_references, matching
from icon_bench.report.roles import without_search
from icon_bench.report.rows import (
    CHANCE_PREFIX,
    _get,
    _is_missing,
    _seed_key,
    _sorted_seeds,
    config_label,
    load_rows,
    metric_kinds,
    metric_names,
    normalise_rows,
    results_file,
    varying_keys,
    warning_kinds,
)
from icon_bench.report.stats import not_above_chance, rank_bands


def aggregate(rows_df: pd.DataFrame, *, lower: Iterable[str] | None = None) -> pd.DataFrame:
    """Per configuration (config_id), protocol version and split: mean, sample std and n of each metric over seeds.

    One row per (protocol_version, split, dataset label, config_id): suite, method, divergence, label, seeds
    (ok ones), expected_seeds (run for the suite(s) and dataset), missing_seeds, failed_seeds, n, n_expected,
    complete, kind / tune / selected (tuned or defaults), per metric `<m>_mean`, `<m>_std` (ddof=1; NaN when
    n < 2), `<m>_n`, and the rank band from paired tests (report/stats.py:rank_bands): `<m>_rank` (of the
    mean), `<m>_rank_lo`, `<m>_rank_hi`, `<m>_tied` (not separated from the best). `lower` ranks smallest
    first (default `metric_kinds`). Failed trials never enter a mean; they make their configuration
    incomplete. A configuration whose rows say `seed_independent` counts its latest ok row only: n = 1 of 1.
    """
    df = without_search(normalise_rows(rows_df))
    metrics = metric_names(df)
    lower = set(metric_kinds(df)[1] if lower is None else lower)
    df["_seed"] = df["seed"].map(_seed_key)
    flags = df["seed_independent"] if "seed_independent" in df.columns else pd.Series(False, index=df.index)
    df["seed_independent"] = flags.map(lambda v: v is True or v == 1.0)
    # Seeds run per (protocol, split, suite, dataset): what every configuration there is expected to have.
    run_seeds = df.groupby(["protocol_version", "split", "suite", "dataset"])["_seed"].agg(lambda s: set(s) - {None})
    out = [
        _config_record(key, group, run_seeds, metrics)
        for key, group in df.groupby(["protocol_version", "split", "dataset", "config_id"], sort=False)
    ]
    agg = pd.DataFrame(out)
    if agg.empty:
        return agg
    agg["label"] = ""
    for m in metrics:
        for suffix in ("_rank", "_rank_lo", "_rank_hi"):
            agg[f"{m}{suffix}"] = pd.Series(pd.NA, index=agg.index, dtype="Int64")
        agg[f"{m}_tied"] = pd.Series(pd.NA, index=agg.index, dtype="boolean")
    # Tuned and default numbers are ranked apart: they were obtained differently.
    for _, idx in agg.groupby(["protocol_version", "split", "dataset", "kind"], sort=False).groups.items():
        # A label names only what tells configurations of one method apart (not, say, the epochs
        # that differ between methods anyway).
        for _, sub in agg.loc[idx].groupby("method", sort=False):
            varying = varying_keys(sub["spec"])
            agg.loc[sub.index, "label"] = [
                config_label(s, varying, d) for s, d in zip(sub["spec"], sub["divergence"])
            ]
        for m in metrics:
            # A configuration not above its label-permutation baseline is marked, not ranked among the rest.
            at_chance = [_at_chance(agg.loc[i], m, m in lower) for i in idx]
            agg.loc[idx, f"{m}_at_chance"] = at_chance
            bands = rank_bands([{} if off else agg.at[i, f"_{m}_values"] for i, off in zip(idx, at_chance)], m in lower)
            for key, suffix in (("rank", "_rank"), ("lo", "_rank_lo"), ("hi", "_rank_hi")):
                agg.loc[idx, f"{m}{suffix}"] = pd.array([b[key] for b in bands], dtype="Int64")
            agg.loc[idx, f"{m}_tied"] = pd.array([b["tied"] for b in bands], dtype="boolean")
    return agg.drop(columns=[f"_{m}_values" for m in metrics])


def _at_chance(rec: pd.Series, metric: str, lower_better: bool) -> bool:
    """Whether the mean is not beyond the rows' mean chance level (rows without one: never)."""
    return not_above_chance(rec[f"{metric}_mean"], rec.get(f"{metric}_chance", math.nan), lower_better)


def _config_record(
    key: tuple[str, str, str, str], group: pd.DataFrame, run_seeds: pd.Series, metrics: list[str]
) -> dict[str, Any]:
    """One configuration's line of `aggregate` (with `_<m>_values`, the per-seed values, for ranking)."""
    version, split, dataset, cid = key
    ok = group[group["status"] == "ok"]
    bad = group[group["status"] != "ok"]
    suites = sorted(set(group["suite"]))
    expected: set = set()
    for suite in suites:
        expected |= run_seeds.get((version, split, suite, dataset), set())
    seed_free = bool(group["seed_independent"].any())
    if seed_free:
        # The seed cannot change the result: one run is the whole sample (rows of other seeds,
        # e.g. from before the method said so, are copies; the latest ok one stands for them).
        ok = ok.tail(1)
        expected = set(ok["_seed"]) if len(ok) else set(bad["_seed"].tail(1))
    ok_seeds = set(ok["_seed"]) - {None}
    failed_seeds = set(bad["_seed"]) - {None} - ok_seeds
    if seed_free:
        failed_seeds &= expected
    missing = expected - ok_seeds - failed_seeds
    spec = group["spec"].iloc[0] if isinstance(group["spec"].iloc[0], Mapping) else {}
    rec: dict[str, Any] = {
        "protocol_version": version,
        "split": split,
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
        "n_expected": 1 if seed_free else max(len(expected), len(group)),
        "seed_independent": seed_free,
        "warned_seeds": _sorted_seeds(s for s, w in zip(ok["_seed"], ok["warnings"]) if w),  # diverged/collapsed
        "warnings": warning_kinds(w for ws in ok["warnings"] for w in ws),
        **_tune_fields(group, ok),
    }
    rec["complete"] = bool(rec["n"] >= rec["n_expected"] and not failed_seeds and not missing)
    for m in metrics:
        present = ok[ok[METRIC_PREFIX + m].notna()]
        vals = present[METRIC_PREFIX + m].to_numpy(dtype=float)
        rec[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
        rec[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rec[f"{m}_n"] = int(len(vals))
        rec[f"_{m}_values"] = dict(zip(present["_seed"], vals))  # seed -> value: ranks pair by seed
        chance = present[CHANCE_PREFIX + m].dropna() if CHANCE_PREFIX + m in present.columns else pd.Series([])
        rec[f"{m}_chance"] = float(chance.mean()) if len(chance) else math.nan
    return rec


# ----------------------------------------------------------------------------------------------
# Building a report
# ----------------------------------------------------------------------------------------------


def build_report(results: str | Path, *, references: list[Reference] | None = None) -> Report:
    """Load, deduplicate and aggregate the rows of one results store into a `Report`.

    Each section carries the published `references` (default: every registered set) whose key
    is its dataset label and whose metric it reports; they are shown, never ranked.
    """
    path = results_file(results)
    all_rows = normalise_rows(load_rows(path))
    rows = without_search(all_rows)
    # Decided once here; aggregation, sorting, the writers and the plots all read these lists.
    fractions, lower = metric_kinds(rows)
    agg = aggregate(rows, lower=lower)
    all_metrics = metric_names(rows)
    sections: list[Section] = []
    for version in sorted(set(rows["protocol_version"]), key=_version_key):
        for split in sorted(set(rows.loc[rows["protocol_version"] == version, "split"]), key=_split_key):
            vrows = rows[(rows["protocol_version"] == version) & (rows["split"] == split)]
            for dataset in _unique(vrows["dataset"]):
                seeds = _sorted_seeds(vrows.loc[vrows["dataset"] == dataset, "seed"].map(_seed_key))
                # Per dataset the tuned tables come first, the defaults table after them.
                kinds = sorted(_unique(vrows.loc[vrows["dataset"] == dataset, "kind"]), key=lambda k: k == DEFAULTS)
                for kind in kinds:
                    table = agg[(agg["protocol_version"] == version) & (agg["split"] == split)
                                & (agg["dataset"] == dataset) & (agg["kind"] == kind)]
                    sections += _sections(version, split, dataset, table, all_metrics, lower, seeds, kind)
    published = load_references() if references is None else references
    for section in sections:
        section.references = matching(published, section.dataset, section.metrics)
    label_of = {(r.protocol_version, r.dataset, r.config_id): r.label for r in agg.itertuples()}

    def trials(mask: pd.Series, detail: str) -> pd.DataFrame:
        """The rows under `mask` as a trial table with their configuration's label and `detail` last."""
        picked = rows[mask].copy()
        picked["label"] = [
            label_of.get((r.protocol_version, r.dataset, r.config_id), r.method) for r in picked.itertuples()
        ]
        cols = ["protocol_version", "trial_id", "config_id", "label", "method", "dataset", "seed", detail]
        return picked[cols].reset_index(drop=True)

    failed = trials(rows["status"] != "ok", "error")
    failed["error"] = failed["error"].map(_first_line)
    warned = trials((rows["status"] == "ok") & (rows["warnings"].map(len) > 0), "warnings")
    configs = {}
    for cid, spec, tune in zip(rows["config_id"], rows["spec"], rows["tune"]):
        if cid not in configs:
            configs[cid] = {k: v for k, v in (spec or {}).items() if k != "seed"} if isinstance(spec, Mapping) else {}
            if _tune_block(tune):  # a tuned configuration says so (its spec equals the cell at defaults)
                configs[cid]["tune"] = _tune_block(tune)
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
    discovery = load_discovery(path, all_rows)
    # Tuning's search rows are among the rows; discovery's are in `discovery` (a report folder keeps them apart).
    tuned = all_rows["tune_role"] == "search"
    if "discover" in all_rows.columns:
        tuned &= pd.Series([_get(d, "role") != "search" for d in all_rows["discover"]], index=all_rows.index)
    found = 0 if discovery is None or discovery.empty else int((discovery["role"] == "search").sum())
    meta["n_search"] = int(tuned.sum()) + found
    return Report(rows, agg, sections, failed, configs, protocols, meta, path.parent, warned=warned, discovery=discovery)


def _sections(
    version: str, split: str, dataset: str, table: pd.DataFrame, all_metrics: list[str], lower: list[str], seeds: list,
    kind: str = DEFAULTS,
) -> list[Section]:
    """One dataset's tables (one per task), each sorted by its primary metric, best first."""
    out = []
    for metrics, group in _metric_groups(table, all_metrics):
        if metrics:
            primary = metrics[0]
            group = group.sort_values(
                [f"{primary}_rank", f"{primary}_mean"], ascending=[True, primary in lower],
                na_position="last", kind="stable",
            )
        out.append(
            Section(
                protocol_version=version,
                dataset=dataset,
                table=group.reset_index(drop=True),
                metrics=metrics,
                varying=varying_keys(group["spec"]),
                seeds=seeds,
                task=task_of(metrics),
                split=split,
                kind=kind,
                tune=group["tune"].iloc[0] if kind != DEFAULTS and len(group) else None,
            )
        )
    return out


def _split_key(split: str) -> tuple[int, str]:
    return (0 if split == "test" else 1, split)  # the test tables first: val ones are for tuning


def _tune_fields(group: pd.DataFrame, ok: pd.DataFrame) -> dict[str, Any]:
    """A configuration's kind (tuned / defaults), its tune block and the values each ok seed selected."""
    selected = {_seed_key(s): _get(t, "selected") for s, t in zip(ok["seed"], ok["tune"]) if _get(t, "selected")}
    return {"kind": group["kind"].iloc[0], "tune": _tune_block(group["tune"].iloc[0]), "selected": selected}


def _tune_block(tune: Any) -> dict[str, Any] | None:
    """What a tuned table's header says about its search (None for rows at defaults)."""
    if _get(tune, "role") != "final":
        return None
    keys = ("budget", "space", "algorithm", "scheduler", "metric", "seed")
    return {k: tune.get(k) for k in keys}


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
    from icon_bench._version import __version__

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
        "report_icon_bench": __version__,
        "icon_bench": collect("versions", "icon_bench"),
        "torch": collect("versions", "torch"),
        "python": collect("versions", "python"),
        "plugins": {dist: sorted(vs) for dist, vs in sorted(plugins.items())},
        "git_commits": collect("git_commit"),
        "devices": collect("device"),
        "processors": collect("versions", "cpu") + collect("versions", "gpu"),
        "run_from": started[0] if started else None,
        "run_to": finished[-1] if finished else None,
        "n_rows": int(len(rows)),
        "n_ok": int((rows["status"] == "ok").sum()),
        "n_failed": int((rows["status"] != "ok").sum()),
    }
