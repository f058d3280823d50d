"""Paired comparisons: each configuration against its baseline on the same dataset, split, protocol and seeds.

Rows pair through report/pairing.py (each contender with the one baseline configuration that
agrees with it on every setting both set, each seed once). Each line is a paired t test on the
per-seed differences (report/stats.py); the lines of one table and metric are one family,
Holm-corrected, and the verdict reads the corrected p-value. Each line also says the smallest
difference its seeds could detect with 80 % power and, for a line that cannot separate, how many
seeds would separate the observed difference. Never an unpaired test on paired data.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icon_bench.errors import IconBenchError
from icon_bench.report.pairing import (
    AXIS_KEYS,
    TABLE_KEYS,
    Config,
    configurations,
    key_value,
    label_all,
    pick_baseline,
)
from icon_bench.report.roles import without_search
from icon_bench.report.rows import (
    _is_missing,
    load_rows,
    metric_kinds,
    metric_names,
    normalise_rows,
)
from icon_bench.report.stats import (
    ALPHA,
    MAX_SEEDS,
    MIN_PAIRS,
    POWER,
    detectable_difference,
    holm,
    paired_test,
    seeds_needed,
)
from icon_bench.run.execution.labels import component_label

__all__ = ["CORRECTION_NOTE", "HEADERS", "NOTE", "PLAN_HEADERS", "cmd_compare", "family_lines", "paired_comparisons", "parse_baseline",
           "verdict"]

IDENTICAL = "identical over seeds: the seed does not change either result"


def parse_baseline(text: str) -> tuple[str, Any]:
    """"divergence=kl" -> ("divergence", "kl"); the value is YAML ("p.debias=0" -> 0, "divergence={name: alpha, a: 0.5}")."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise IconBenchError(f"--baseline expects KEY=VALUE (e.g. divergence=kl), got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, Mapping):  # a component with parameters reads as tables show it: alpha(a=0.5)
        value = component_label(value)
    return key.strip(), value


def _same(value: Any, wanted: Any) -> bool:
    if value is None:
        return wanted is None
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        try:
            return math.isclose(float(value), float(wanted))
        except (TypeError, ValueError):
            return False
    return str(value) == str(wanted)


def verdict(result: Mapping[str, Any], lower_better: bool = False, *, alpha: float = ALPHA) -> str:
    """"better" / "worse" when the (Holm-corrected, if given) p-value is below `alpha`, else "not separable at n seeds".

    Below `MIN_PAIRS` pairs nothing is separated; differences identical over seeds say so.
    """
    n = result["n"]
    p = result.get("p_holm", result.get("p_value"))
    up = result["mean_diff"] > 0
    side = "better" if up != lower_better else "worse"
    if n < MIN_PAIRS:
        return f"too few pairs to separate ({n} of {MIN_PAIRS})"
    if result.get("identical"):
        return f"{side}; {IDENTICAL}" if not _is_missing(p) and p < alpha else f"no difference; {IDENTICAL}"
    if not _is_missing(p) and p < alpha:
        return side
    return f"not separable at {n} seed{'s' if n != 1 else ''}"


def family_lines(tests: list[dict[str, Any]], lower_better: bool) -> list[dict[str, Any]]:
    """Complete one family's paired tests: Holm-corrected p, verdict, detectable difference and seeds needed.

    The power figures use the family's first Holm threshold (5 % / number of lines), so they hold
    whatever the other lines of the family do.
    """
    adjusted = holm([t["p_value"] for t in tests])
    m = max(1, sum(not _is_missing(t["p_value"]) for t in tests))
    out = []
    for test, p in zip(tests, adjusted):
        line = {**test, "p_holm": p, "family": m}
        line["verdict"] = verdict(line, lower_better)
        line["detectable"] = detectable_difference(test["n"], test["sd"], alpha=ALPHA / m)
        separated = line["verdict"] in ("better", "worse") or line["verdict"].startswith(("better;", "worse;"))
        line["seeds_needed"] = None if separated or test.get("identical") else \
            seeds_needed(test["mean_diff"], test["sd"], alpha=ALPHA / m)
        out.append(line)
    return out


def _contenders(configs: dict[str, Config], key: str, wanted: Any) -> list[tuple[Config, Config]]:
    """(contender, baseline) pairs of one table: every configuration not matching the baseline, with its baseline."""
    bases = [c for c in configs.values() if _same(key_value(c.cfg, key), wanted)]
    base_ids = {c.config_id for c in bases}
    free = [key] + (["divergence"] if key == "method" else [])  # another method: its divergence is its own
    out = []
    for cont in configs.values():
        if cont.config_id in base_ids:
            continue
        base = pick_baseline(cont, bases, free)
        if base is not None and set(cont.seeds) & set(base.seeds):
            out.append((cont, base))
    return out


def paired_comparisons(rows: pd.DataFrame, baseline: str, *, metrics: list[str] | None = None,
                       primary_only: bool = False) -> pd.DataFrame:
    """One line per (table, contender configuration, metric) against its baseline; empty when nothing pairs.

    A table is (protocol version, kind, dataset, split). With `primary_only` each table compares on
    its first metric only (the one its leaderboard ranks by).
    """
    key, wanted = parse_baseline(baseline)
    df = without_search(normalise_rows(rows))
    df = df[df["status"] == "ok"].reset_index(drop=True)
    lower = set(metric_kinds(df)[1]) if len(df) else set()
    per_metric = {m: configurations(df, m) for m in (metrics or metric_names(df))}
    tables = list(dict.fromkeys(t for by_table in per_metric.values() for t in by_table))
    out = []
    for table in tables:
        done = False
        for m, by_table in per_metric.items():
            configs = by_table.get(table, {})
            pairs = _contenders(configs, key, wanted)
            if not pairs or (primary_only and done):
                continue
            done = True
            label_all(configs.values(), always=[] if key in AXIS_KEYS else [key])
            tests = []
            for cont, base in pairs:
                seeds = sorted(set(cont.seeds) & set(base.seeds), key=lambda s: (isinstance(s, str), s))
                tests.append({**dict(zip(TABLE_KEYS, table)), "configuration": cont.label, "baseline": base.label,
                              "config_id": cont.config_id, "baseline_id": base.config_id, "metric": m,
                              **paired_test([cont.seeds[s] - base.seeds[s] for s in seeds]),
                              "seeds": " ".join(map(str, seeds)),
                              "at_chance": ", ".join(side for side, c in (("configuration", cont), ("baseline", base))
                                                     if c.at_chance(m in lower))})
            out += [{**line, "verdict": line["verdict"] + (f" ({line['at_chance']} at chance level)"
                                                           if line["at_chance"] else ""), "against": baseline}
                    for line in family_lines(tests, m in lower)]
    return pd.DataFrame(out)


def format_diff(value: float, fraction: bool) -> str:
    if _is_missing(value):
        return "–"
    return f"{value * (100 if fraction else 1):+.{1 if fraction else 3}f}"


def _size(value: Any, fraction: bool) -> str:
    return "–" if _is_missing(value) else format_diff(value, fraction).lstrip("+")


def needed_text(rec: Mapping[str, Any]) -> str:
    """What a line says about seeds: "–" when separated, "8", "more than 50", or why it cannot be told."""
    if rec.get("identical") or str(rec["verdict"]).startswith(("better", "worse")):
        return "–"
    if _is_missing(rec.get("sd")):
        return "unknown (one pair: no spread)"
    needed = rec.get("seeds_needed")
    if needed is None or _is_missing(needed):
        return "none (no difference)" if rec["mean_diff"] == 0 else f"more than {MAX_SEEDS}"
    return str(int(needed)) + (f" (spread from {rec['n']} pairs)" if rec["n"] < MIN_PAIRS else "")


def display_rows(table: pd.DataFrame, fractions: set[str]) -> list[list[str]]:
    """Cells for writers, as `HEADERS` names them."""
    body = []
    for r in table.to_dict("records"):
        frac = r["metric"] in fractions
        interval = "–" if _is_missing(r["lo"]) or r.get("identical") else \
            f"[{format_diff(r['lo'], frac)}, {format_diff(r['hi'], frac)}]"
        p = "–" if _is_missing(r.get("p_holm")) else f"{r['p_holm']:.3g}"
        body.append([str(r["configuration"]), str(r["baseline"]), r["metric"] + (" (×100)" if frac else ""),
                     str(r["n"]), format_diff(r["mean_diff"], frac), interval, p, str(r["verdict"]),
                     _size(r.get("detectable"), frac), needed_text(r)])
    return body


HEADERS = ["configuration", "baseline", "metric", "pairs", "mean difference", "95 % interval", "p (Holm)", "verdict",
           f"detectable ({POWER * 100:.0f} % power)", "seeds to separate"]
PLAN_HEADERS = ["configuration", "baseline", "metric", "pairs", "sd of differences", "observed difference",
                f"detectable ({POWER * 100:.0f} % power)", "seeds to separate"]


def plan_rows(table: pd.DataFrame, fractions: set[str]) -> list[list[str]]:
    """Cells of `compare --plan`: the spread, what these seeds can detect, and the seeds a verdict needs."""
    return [[str(r["configuration"]), str(r["baseline"]), r["metric"] + (" (×100)" if r["metric"] in fractions else ""),
             str(r["n"]), _size(r.get("sd"), r["metric"] in fractions),
             format_diff(r["mean_diff"], r["metric"] in fractions), _size(r.get("detectable"), r["metric"] in fractions),
             needed_text(r)] for r in table.to_dict("records")]


CORRECTION_NOTE = (
    "P-values and verdicts are Holm-corrected over the lines of each table and metric. Detectable: the smallest true "
    f"difference these pairs find with {POWER * 100:.0f} % power at 5 % / lines (from the paired standard "
    f"deviation). Seeds to separate: the pairs at which the observed difference would be found with "
    f"{POWER * 100:.0f} % power (\"more than {MAX_SEEDS}\" when that many would not do)."
)
NOTE = f"Paired t over seeds (95 % interval; none below {MIN_PAIRS} pairs). " + CORRECTION_NOTE


def cmd_compare(args: argparse.Namespace) -> int:
    """Handler of `icon-bench compare` (and `--plan`)."""
    from tabulate import tabulate

    rows = normalise_rows(load_rows(args.results))
    table = paired_comparisons(rows, args.baseline, metrics=args.metric)
    if table.empty:
        key, wanted = parse_baseline(args.baseline)
        ok = without_search(rows)
        seen = sorted({str(key_value(c.cfg, key)) for m in metric_names(ok) for t in configurations(ok, m).values()
                       for c in t.values()})
        raise IconBenchError(
            f"nothing to compare in {args.results}: no configuration pairs with a baseline {key}={wanted} on the "
            f"same dataset, split and seeds ({key} values in the rows: {', '.join(seen) or 'none'})"
        )
    if args.json:
        for rec in table.to_dict("records"):
            print(json.dumps(rec, default=str))
        return 0
    fractions = set(metric_kinds(without_search(rows))[0])
    cells, headers = (plan_rows, PLAN_HEADERS) if getattr(args, "plan", False) else (display_rows, HEADERS)
    for (version, kind, dataset, split), group in table.groupby(list(TABLE_KEYS), sort=False):
        print(f"\n{dataset} ({split} split), {kind}, protocol {version}: against {args.baseline}")
        print(tabulate(cells(group, fractions), headers=headers, tablefmt="simple", disable_numparse=True))
    print(f"\n{NOTE}")
    return 0


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    table.to_csv(path, index=False)
    return path
