"""Claims measured on the committed reports: paired contender and baseline rows, each line's verdict, claims.csv."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icon_bench.report.claims import AXIS_KEYS, Claim
from icon_bench.report.compare import (
    _key_value,
    _same,
    format_diff,
    paired_interval,
    verdict,
)
from icon_bench.report.model import METRIC_PREFIX
from icon_bench.report.rows import (
    _is_missing,
    config_label,
    flatten_spec,
    load_rows,
    metric_kinds,
    normalise_rows,
    without_search,
)

__all__ = ["CONTRADICTED", "SUPPORTED", "claims_csv", "measure_claim", "one_of", "suite_rows"]

SUPPORTED, CONTRADICTED, CANNOT = "supported", "contradicted", "cannot separate"
#: Spec keys that are never part of a configuration (datasets pair by label, seeds and splits by rule).
_NOT_CONFIG = ("seed", "evaluate", "split", "dataset")
#: claims.csv columns, in order (the README's lines, with the unscaled numbers beside the shown ones).
CSV_COLUMNS = ["claim", "paper", "statement", "metric", "expect", "published", "suite", "dataset", "protocol_version",
               "kind", "configuration", "baseline", "pairs", "difference", "interval", "mean_diff", "lo", "hi",
               "scale", "interval_method", "seeds", "verdict"]


def suite_rows(suite_dir: Path) -> pd.DataFrame | None:
    """A report folder's rows (results.parquet, or results.json) that can pair: ok, not search, test split."""
    for name in ("results.parquet", "results.json"):
        path = suite_dir / name
        if path.is_file():
            raw = pd.read_parquet(path) if name.endswith(".parquet") else load_rows(path)
            df = without_search(normalise_rows(raw))
            return df[(df["status"] == "ok") & (df["split"] == "test")].reset_index(drop=True)
    return None


def _setting_key(key: str) -> str:
    """A grid's plain trainer-setting key ("epochs") as the spec holds it ("settings.epochs")."""
    return key if "." in key or key in AXIS_KEYS else f"settings.{key}"


def _matches(rec: Mapping[str, Any], flat: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Every key of `filters` holds one of its values (a list: any of them; null: the key is not set)."""
    for key, wanted in filters.items():
        if key == "dataset":
            values = [rec.get("dataset"), rec.get("dataset_name")]
        else:
            value = _key_value(rec, flat, key)
            values = [None if value == "default" and key in AXIS_KEYS else value]
        if not any(one_of(v, wanted) for v in values):
            return False
    return True


def one_of(value: Any, wanted: Any) -> bool:
    """Whether a filter's value (a list: any of them; null: not set) holds `value` (None: not set)."""
    options = wanted if isinstance(wanted, list) else [wanted]
    return any((value is None) if w is None else (value is not None and _same(value, w)) for w in options)


def _config(rec: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """A row's configuration: its set spec keys but seed, split, evaluate and dataset; method and divergence resolved."""
    cfg = {k: v for k, v in flat.items() if k.split(".")[0] not in _NOT_CONFIG and not _is_missing(v)}
    cfg["method"] = rec["method"]
    if rec.get("divergence") not in (None, "default"):  # the resolved name, so a method's default KL still pairs
        cfg = {k: v for k, v in cfg.items() if k.split(".")[0] != "divergence"}
        cfg["divergence"] = rec["divergence"]
    return cfg


def _canon(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # 0 and 0.0 (parquet widens ints beside NaN) are one value
    return str(value)


def _ident(cfg: Mapping[str, Any]) -> str:
    return json.dumps({k: _canon(v) for k, v in cfg.items()}, sort_keys=True)


def _free(key: str, claim_keys: Iterable[str]) -> bool:
    """Whether `key` is one the two sides may differ by (a claim key or below one)."""
    return any(key == k or key.startswith(k + ".") for k in claim_keys)


def _pick_baseline(cont: Mapping[str, Any], baselines: Iterable[dict[str, Any]], claim_keys: set[str]) -> dict | None:
    """The baseline configuration agreeing with `cont` on every key both set, the claim's own keys aside.

    Several agree (a baseline sets a key the contender leaves alone): the one sharing the most keys,
    then the one with the most paired seeds, then the first label, so the choice never depends on row order.
    """
    ranked = []
    for base in baselines:
        shared = [k for k in set(cont["cfg"]) & set(base["cfg"]) if not _free(k, claim_keys)]
        if all(_canon(cont["cfg"][k]) == _canon(base["cfg"][k]) for k in shared):
            ranked.append((-len(shared), -len(set(base["seeds"]) & set(cont["seeds"])), base["label"], id(base), base))
    return min(ranked)[-1] if ranked else None


def _varying(configs: list[dict[str, Any]], claim: Claim) -> list[str]:
    """Keys a line's labels show: the claim's, the where keys with several values, and any set to two values in the group."""
    keys = {_setting_key(k) for k in claim.compared_keys()} | {_setting_key(k) for k, v in claim.where.items() if isinstance(v, list)}
    every = sorted({k for c in configs for k in c})
    keys |= {k for k in every if len({_canon(c[k]) for c in configs if k in c}) > 1}  # unset is not a value
    return sorted(keys)


def measure_claim(claim: Claim, suite: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The claim's measured lines in one suite's rows: one per (protocol, kind, dataset, contender configuration).

    Reason: one pass sorts rows into sides and configurations, then each contender configuration
    finds its baseline and is scored; the steps share the per-group tables and stay short.
    """
    column = METRIC_PREFIX + claim.metric
    if rows.empty or column not in rows.columns:
        return []
    fractions, lower = metric_kinds(rows)
    claim_keys = {_setting_key(k) for k in claim.compared_keys()}
    groups: dict[tuple[str, str, str], dict[str, dict[str, dict[str, Any]]]] = {}
    for rec in rows.to_dict("records"):
        flat = flatten_spec(rec["spec"] if isinstance(rec["spec"], Mapping) else {})
        if _is_missing(rec.get(column)) or not _matches(rec, flat, claim.where):
            continue
        side = "contender" if _matches(rec, flat, claim.contender) else (
            "baseline" if _matches(rec, flat, claim.baseline) else None)
        if side is None:
            continue
        cfg = _config(rec, flat)
        group = groups.setdefault((str(rec["protocol_version"]), str(rec.get("kind")), str(rec["dataset"])),
                                  {"contender": {}, "baseline": {}})
        entry = group[side].setdefault(_ident(cfg), {"cfg": cfg, "spec": rec["spec"], "div": rec["divergence"],
                                                     "seeds": {}})
        entry["seeds"][rec["seed"]] = float(rec[column])  # rows are in store order: a later retry wins
    lines = []
    for (version, kind, dataset), sides in sorted(groups.items()):
        every = [e["cfg"] for side in sides.values() for e in side.values()]
        varying = _varying(every, claim)
        for side in sides.values():
            for e in side.values():
                e["label"] = config_label(e["spec"], varying, e["div"])
        for cont in sorted(sides["contender"].values(), key=lambda e: e["label"]):
            base = _pick_baseline(cont, sides["baseline"].values(), claim_keys)
            seeds = sorted(set(cont["seeds"]) & set(base["seeds"]), key=str) if base else []
            if not seeds:
                continue
            res = paired_interval([cont["seeds"][s] - base["seeds"][s] for s in seeds])
            lines.append(_line(claim, suite, (version, kind, dataset), cont["label"], base["label"], res, seeds,
                               claim.metric in fractions, claim.metric in lower))
    return lines


def _line(claim: Claim, suite: str, where: tuple[str, str, str], label: str, base: str, res: Mapping[str, Any],
          seeds: list[Any], fraction: bool, lower_better: bool) -> dict[str, Any]:
    side = verdict(res, lower_better)
    if side in ("better", "worse"):
        outcome = SUPPORTED if side == claim.expect else CONTRADICTED
    else:
        outcome = f"{CANNOT} ({res['n']} pair{'s' if res['n'] != 1 else ''})"
    interval = "–" if _is_missing(res["lo"]) else f"[{format_diff(res['lo'], fraction)}, {format_diff(res['hi'], fraction)}]"
    return {
        "claim": claim.id, "paper": claim.paper, "statement": claim.statement, "metric": claim.metric,
        "expect": claim.expect, "suite": suite, "protocol_version": where[0], "kind": where[1], "dataset": where[2],
        "configuration": label, "baseline": base, "pairs": res["n"], "difference": format_diff(res["mean_diff"], fraction),
        "interval": interval, "mean_diff": res["mean_diff"], "lo": res["lo"], "hi": res["hi"],
        "scale": 100 if fraction else 1, "interval_method": res["interval"],
        "seeds": " ".join(_seed_text(s) for s in seeds), "verdict": outcome,
    }


def _seed_text(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, float) and math.isfinite(seed) and seed.is_integer() else str(seed)


def claims_csv(lines: list[dict[str, Any]], published: Mapping[str, str], path: Path) -> Path:
    """reports/claims.csv: the README's measured lines, each with its claim's published figures as text."""
    frame = pd.DataFrame([{**line, "published": published.get(line["claim"], "")} for line in lines],
                         columns=CSV_COLUMNS)
    frame.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
    return path
