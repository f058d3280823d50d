"""Paired comparisons: each configuration against its baseline on the same datasets, splits and seeds.

Rows pair when they differ only in the baseline's key (``divergence=kl``: the divergence) and
share protocol version, how they were obtained (tuned or defaults), dataset, split and seed. The
mean paired difference gets a 95 % interval: a paired t interval (scipy.stats.t) when there are
fewer than `T_BELOW` pairs, where a bootstrap over so few seeds would be too narrow, else a
percentile bootstrap over seeds with a fixed seed. Never an unpaired test on paired data.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.errors import IconBenchError
from icon_bench.report.model import METRIC_PREFIX
from icon_bench.report.rows import (
    _is_missing,
    _name_of,
    config_label,
    flatten_spec,
    load_rows,
    metric_kinds,
    metric_names,
    normalise_rows,
    varying_keys,
    without_search,
)

__all__ = ["T_BELOW", "cmd_compare", "paired_comparisons", "paired_interval", "parse_baseline"]

#: Fewer pairs than this: a paired t interval; this many or more: a bootstrap over seeds.
T_BELOW = 10
RESAMPLES = 10_000
_SKIP = ("seed", "evaluate", "split")  # never part of what a pair must share beyond seed and split themselves


def parse_baseline(text: str) -> tuple[str, Any]:
    """"divergence=kl" -> ("divergence", "kl"); the value is YAML ("p.debias=0" -> 0)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise IconBenchError(f"--baseline expects KEY=VALUE (e.g. divergence=kl), got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def paired_interval(diffs: Iterable[float], *, resamples: int = RESAMPLES, seed: int = 0,
                    t_below: int = T_BELOW) -> dict[str, Any]:
    """Mean of paired differences with its 95 % interval: paired t below `t_below` pairs, else bootstrap."""
    from scipy import stats

    d = np.asarray(list(diffs), dtype=float)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "lo": math.nan, "hi": math.nan,
                           "interval": "none (one pair)" if n == 1 else "none", "p_value": math.nan}
    if n < 2:
        return out
    if n < t_below:
        se = float(d.std(ddof=1)) / math.sqrt(n)
        half = float(stats.t.ppf(0.975, n - 1)) * se
        out.update(lo=out["mean_diff"] - half, hi=out["mean_diff"] + half, interval=f"paired t ({n - 1} df)")
        if se > 1e-12 * max(1.0, abs(out["mean_diff"])):  # identical differences: no spread, no p-value
            out["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue)  # equals ttest_rel on the pairs
        return out
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    out.update(lo=float(lo), hi=float(hi), interval=f"bootstrap over seeds ({resamples} resamples)")
    return out


def verdict(result: Mapping[str, Any], lower_better: bool = False) -> str:
    """"better" / "worse" than the baseline when the interval excludes 0, else "not separable at n seeds"."""
    lo, hi, n = result["lo"], result["hi"], result["n"]
    if not _is_missing(lo) and not _is_missing(hi) and (lo > 0 or hi < 0):
        up = lo > 0
        return "better" if up != lower_better else "worse"
    return f"not separable at {n} seed{'s' if n != 1 else ''}"


def _key_value(row: Mapping[str, Any], flat: Mapping[str, Any], key: str) -> Any:
    if key in ("divergence", "method"):
        return row[key]  # the resolved name: a spec that left the divergence to the method still pairs
    if key in flat:
        return flat[key]
    if "." not in key and f"settings.{key}" in flat:  # a grid's plain key is a trainer setting ("epochs")
        return flat[f"settings.{key}"]
    prefixed = {k[len(key) + 1:]: v for k, v in flat.items() if k.startswith(key + ".")}
    return _name_of(prefixed) if prefixed else None


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        try:
            return math.isclose(float(value), float(wanted))
        except (TypeError, ValueError):
            return False
    return str(value) == str(wanted)


def paired_comparisons(rows: pd.DataFrame, baseline: str, *, metrics: list[str] | None = None,
                       primary_only: bool = False, resamples: int = RESAMPLES, seed: int = 0,
                       t_below: int = T_BELOW) -> pd.DataFrame:
    """One line per (protocol, how obtained, dataset, split, configuration, metric) against the baseline.

    `rows` are result rows (normalised or not). With `primary_only` each group compares on its first
    metric only (the one its leaderboard ranks by). An empty frame when no row matches the baseline.
    Reason: one pass that builds the pairing key, finds the baseline rows and scores every other
    configuration of the group, each step a few lines; split up it would pass five frames around.
    """
    key, wanted = parse_baseline(baseline)
    df = without_search(normalise_rows(rows))
    df = df[df["status"] == "ok"].reset_index(drop=True)
    all_metrics = metrics or metric_names(df)
    lower = set(metric_kinds(df)[1]) if len(df) else set()
    groups: dict[str, list[tuple[Any, Mapping[str, Any], dict[str, Any]]]] = {}
    for rec in df.to_dict("records"):
        flat = flatten_spec(rec["spec"] if isinstance(rec["spec"], Mapping) else {})
        rest = {k: v for k, v in flat.items() if k != key and not k.startswith(key + ".") and k.split(".")[0] not in _SKIP}
        if key not in ("divergence", "method"):
            rest["_divergence"] = rec["divergence"]
        split = rec.get("split") if isinstance(rec.get("split"), str) else (rec["spec"] or {}).get("split", "test")
        rec["_split"] = split
        group = json.dumps([rec["protocol_version"], rec.get("kind"), rec["dataset"], split, rest], sort_keys=True,
                           default=str)
        groups.setdefault(group, []).append((_key_value(rec, flat, key), flat, rec))
    # Every key that differs between the rows goes in the labels: "pmi · tv · p.debias=0.6", so two
    # lines of one table never read the same.
    varying = [key] + [k for k in varying_keys(df["spec"]) if k != key]
    out = []
    for members in groups.values():
        base = {m[2]["seed"]: m[2] for m in members if _same(m[0], wanted)}
        if not base:
            continue
        others: dict[str, list[dict[str, Any]]] = {}
        for value, _, rec in members:
            if not _same(value, wanted):
                others.setdefault(json.dumps(value, default=str, sort_keys=True), []).append(rec)
        first = next(iter(base.values()))
        present = [m for m in all_metrics if any(not _is_missing(r.get(METRIC_PREFIX + m)) for r in base.values())]
        for recs in others.values():
            for m in present[:1] if primary_only else present:
                pairs = [(r["seed"], r[METRIC_PREFIX + m], base[r["seed"]][METRIC_PREFIX + m]) for r in recs
                         if r["seed"] in base]
                pairs = [p for p in pairs if not (_is_missing(p[1]) or _is_missing(p[2]))]
                if not pairs:
                    continue
                res = paired_interval([a - b for _, a, b in pairs], resamples=resamples, seed=seed, t_below=t_below)
                out.append({
                    "protocol_version": first["protocol_version"], "kind": first.get("kind"),
                    "dataset": first["dataset"], "split": first["_split"],
                    "configuration": config_label(recs[0]["spec"], varying, recs[0]["divergence"]),
                    "baseline": config_label(first["spec"], varying, first["divergence"]),
                    "metric": m, **res, "verdict": verdict(res, m in lower),
                    "seeds": " ".join(str(s) for s, _, _ in sorted(pairs, key=lambda p: str(p[0]))),
                })
    return pd.DataFrame(out)


def format_diff(value: float, fraction: bool) -> str:
    if _is_missing(value):
        return "–"
    return f"{value * (100 if fraction else 1):+.{1 if fraction else 3}f}"


def display_rows(table: pd.DataFrame, fractions: set[str]) -> list[list[str]]:
    """Cells for writers: configuration, baseline, metric, n, mean diff, 95 % interval, method, verdict."""
    body = []
    for r in table.to_dict("records"):
        frac = r["metric"] in fractions
        interval = "–" if _is_missing(r["lo"]) else f"[{format_diff(r['lo'], frac)}, {format_diff(r['hi'], frac)}]"
        body.append([str(r["configuration"]), str(r["baseline"]), r["metric"] + (" (×100)" if frac else ""),
                     str(r["n"]), format_diff(r["mean_diff"], frac), interval, str(r["interval"]), str(r["verdict"])])
    return body


HEADERS = ["configuration", "baseline", "metric", "pairs", "mean difference", "95 % interval", "interval", "verdict"]


def cmd_compare(args: argparse.Namespace) -> int:
    """Handler of `icon-bench compare`."""
    from tabulate import tabulate

    rows = normalise_rows(load_rows(args.results))
    table = paired_comparisons(rows, args.baseline, metrics=args.metric)
    if table.empty:
        key, wanted = parse_baseline(args.baseline)
        ok = without_search(rows)
        seen = sorted({str(_key_value(r, flatten_spec(r["spec"] or {}), key)) for r in ok.to_dict("records")})
        raise IconBenchError(
            f"nothing to compare in {args.results}: no configuration pairs with a baseline {key}={wanted} on the "
            f"same dataset, split and seeds ({key} values in the rows: {', '.join(seen) or 'none'})"
        )
    if args.json:
        for rec in table.to_dict("records"):
            print(json.dumps(rec, default=str))
        return 0
    fractions = set(metric_kinds(without_search(rows))[0])
    for (version, kind, dataset, split), group in table.groupby(["protocol_version", "kind", "dataset", "split"],
                                                                sort=False):
        print(f"\n{dataset} ({split} split), {kind}, protocol {version}: against {args.baseline}")
        print(tabulate(display_rows(group, fractions), headers=HEADERS, tablefmt="simple", disable_numparse=True))
    return 0


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    table.to_csv(path, index=False)
    return path
