"""Loss discovery in a report: its rows, verdicts against the named baselines, each found loss as formula, snippet and name."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.report.compare import format_diff
from icon_bench.report.model import METRIC_PREFIX
from icon_bench.report.roles import _get, _is_missing
from icon_bench.report.rows import _seed_key, normalise_rows
from icon_bench.report.stats import ALPHA, MIN_PAIRS, holm, paired_test

#: The discovery rows of a report (search ones included), beside its results.parquet: the parquet
#: keeps the leaderboard's rows only, and a report regenerated from its folder needs the search history.
DISCOVERY_FILE = "discovery.json"
CSV_FILE = "discovered.csv"
#: Outcomes of one verdict (study x baseline x metric).
BETTER, NOTHING, NO_VERDICT = "better", "nothing", "no verdict"
_KEEP = ("trial_id", "config_id", "status", "split", "seed", "method", "dataset", "protocol_version", "discover")


@dataclass
class CandidateTest:
    """One candidate paired with one baseline on the seeds both have, Holm-adjusted over the study's candidates."""

    name: str
    rank: int | None
    n: int
    mean_diff: float  # candidate - baseline, in the metric's own units
    lo: float
    hi: float
    p_value: float
    p_holm: float
    outcome: str  # "better", "worse", "not separated" or "no verdict"


@dataclass
class Verdict:
    """What the confirmation seeds say about a study's candidates against one baseline on one metric."""

    study: str
    task: str
    dataset: str
    baseline: str
    metric: str
    higher_is_better: bool
    outcome: str  # BETTER, NOTHING or NO_VERDICT
    n: int  # most pairs any candidate had with the baseline
    text: str
    best: CandidateTest | None = None  # the significantly better candidate named (largest improvement)
    worse: list[str] = field(default_factory=list)  # candidates significantly worse
    tests: list[CandidateTest] = field(default_factory=list)


def discovery_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Normalised `rows` that hold a ``discover`` mapping (any role), with columns role, study and task added."""
    if "discover" not in rows.columns:
        return pd.DataFrame(columns=[*_KEEP, "role", "study", "task"])
    found = rows[[isinstance(d, Mapping) for d in rows["discover"]]].copy()
    found["role"] = [str(d.get("role")) for d in found["discover"]]
    found["study"] = [str(d.get("study")) for d in found["discover"]]
    found["task"] = [str(d.get("task") or "") for d in found["discover"]]
    return found.reset_index(drop=True)


def load_discovery(path: Path, all_rows: pd.DataFrame) -> pd.DataFrame:
    """The discovery rows of a results file, or of the DISCOVERY_FILE beside a report's results.parquet."""
    found = discovery_rows(all_rows)
    beside = path.parent / DISCOVERY_FILE
    if found.empty and path.suffix.lower() != ".jsonl" and beside.is_file():
        found = discovery_rows(normalise_rows(pd.DataFrame(json.loads(beside.read_text(encoding="utf-8")))))
    return found


def write_rows(discovery: pd.DataFrame, path: Path) -> Path:
    """DISCOVERY_FILE: the discovery rows as JSON records (what `load_discovery` reads back)."""
    metrics = [c for c in discovery.columns if c.startswith(METRIC_PREFIX)]
    records = []
    for _, row in discovery.iterrows():
        rec = {k: _plain(row.get(k)) for k in _KEEP if k in row}
        rec["dataset_label"] = rec.get("dataset")
        rec["protocol"] = {"version": rec.pop("protocol_version", None)}
        rec["metrics"] = {c[len(METRIC_PREFIX):]: float(row[c]) for c in metrics if not _is_missing(row[c])}
        records.append(rec)
    path.write_text(json.dumps(records, indent=1, default=str), encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones; NaN as None (JSON has no NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


# ----------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------


def study_metric(discovery: pd.DataFrame, study: str) -> tuple[str | None, bool | None]:
    """The metric a study searched on and whether higher is better (its search rows', else its confirmation rows')."""
    rows = discovery[discovery["study"] == study]
    for d in sorted(rows["discover"], key=lambda d: d.get("role") != "search"):
        if d.get("metric"):
            hib = d.get("higher_is_better")
            return str(d["metric"]), None if hib is None else bool(hib)
    return None, None


def _per_seed(rows: pd.DataFrame, metric: str) -> dict[Any, float]:
    """seed -> value of the ok rows with a finite value (the latest row of a seed wins)."""
    col = METRIC_PREFIX + metric
    out: dict[Any, float] = {}
    if col not in rows.columns:
        return out
    for seed, status, value in zip(rows["seed"], rows["status"], rows[col]):
        if status == "ok" and not _is_missing(value) and math.isfinite(float(value)) and _seed_key(seed) is not None:
            out[_seed_key(seed)] = float(value)
    return out


def _study_metrics(rows: pd.DataFrame, searched: str | None) -> list[str]:
    """Metrics the confirmation rows hold, the searched one first."""
    held = [c[len(METRIC_PREFIX):] for c in rows.columns
            if c.startswith(METRIC_PREFIX) and rows[c].notna().any()]
    return sorted(held, key=lambda m: m != searched)


def verdict(discovery: pd.DataFrame | list[dict], *, lower: Iterable[str] = (), fractions: Iterable[str] = (),
            alpha: float = ALPHA, metrics: Iterable[str] | None = None) -> list[Verdict]:
    """Each study's candidates against each of its baselines, per metric, paired by seed.

    `discovery` is `discovery_rows` or result rows as stored (dicts or their frame).
    Candidate minus baseline on the seeds both have (`stats.paired_test`), the p-values Holm-adjusted
    over the study's candidates (one family per study x baseline x metric). `lower` names metrics
    where smaller is better (the searched metric follows its search rows' ``higher_is_better``);
    `metrics` restricts the metrics judged (default: every one the confirmation rows hold); `fractions`
    are written x100 in the sentences, as the tables show them.
    """
    lower, fractions = set(lower), set(fractions)
    if not isinstance(discovery, pd.DataFrame) or "role" not in discovery.columns:  # result rows as stored
        discovery = discovery_rows(normalise_rows(pd.DataFrame(discovery)))
    out: list[Verdict] = []
    for study in dict.fromkeys(discovery["study"]):
        rows = discovery[discovery["study"] == study]
        cands = rows[rows["role"] == "candidate"]
        bases = rows[rows["role"] == "baseline"]
        if cands.empty or bases.empty:
            continue
        searched, hib = study_metric(discovery, study)
        names = list(dict.fromkeys(candidate_name(d) for d in cands["discover"]))
        ranks = {candidate_name(d): _get(d, "rank") for d in cands["discover"]}
        baselines = list(dict.fromkeys(str(_get(d, "method")) for d in bases["discover"]))
        for metric in _study_metrics(pd.concat([cands, bases]), searched):
            if metrics is not None and metric not in set(metrics):
                continue
            higher = hib if metric == searched and hib is not None else metric not in lower
            for base in baselines:
                base_rows = bases[[str(_get(d, "method")) == base for d in bases["discover"]]]
                values = {n: _per_seed(cands[[candidate_name(d) == n for d in cands["discover"]]], metric) for n in names}
                out.append(_judge(study, rows, base, metric, higher, values, ranks,
                                  _per_seed(base_rows, metric), alpha, metric in fractions))
    return out


def _judge(study: str, rows: pd.DataFrame, base: str, metric: str, higher: bool, values: dict[str, dict],
           ranks: dict[str, Any], base_values: dict[Any, float], alpha: float, frac: bool = False) -> Verdict:
    """One family: every candidate's paired test against `base`, Holm over them, and the sentence it supports."""
    tests = []
    for name, vals in values.items():
        shared = sorted(set(vals) & set(base_values), key=str)
        t = paired_test([vals[s] - base_values[s] for s in shared])
        tests.append(CandidateTest(name, _int(ranks.get(name)), t["n"], t["mean_diff"], t["lo"], t["hi"],
                                   t["p_value"], math.nan, "no verdict"))
    for t, p in zip(tests, holm([t.p_value for t in tests])):
        t.p_holm = p
        if t.n >= MIN_PAIRS and not math.isnan(p):
            good = t.mean_diff > 0 if higher else t.mean_diff < 0
            t.outcome = ("better" if good else "worse") if p < alpha else "not separated"
    n = max((t.n for t in tests), default=0)
    better = [t for t in tests if t.outcome == "better"]
    best = max(better, key=lambda t: abs(t.mean_diff)) if better else None
    worse = [t.name for t in tests if t.outcome == "worse"]
    dataset = ", ".join(dict.fromkeys(str(d) for d in rows["dataset"]))
    task = next((t for t in rows["task"] if t), "")
    if best is not None:
        outcome, text = BETTER, (f"found a loss better than {base}: {best.name}, {metric}{' (×100)' if frac else ''} "
                                 f"{_diff(best, frac)} over "
                                 f"{best.n} seeds, Holm-adjusted p = {best.p_holm:.2g}")
    elif n < MIN_PAIRS:
        outcome, text = NO_VERDICT, f"no verdict is possible at {n} seeds (fewer than {MIN_PAIRS} pairs with {base})"
    else:
        outcome, text = NOTHING, f"nothing found beats {base} at {n} seeds"
    if worse:
        text += f"; significantly worse than {base}: {', '.join(worse)}"
    return Verdict(study, task, dataset, base, metric, higher, outcome, n, text, best, worse, tests)


def _diff(t: CandidateTest, frac: bool) -> str:
    """'+5.2 (95 % interval +3.1 to +7.3)': the mean paired difference, candidate minus baseline."""
    if math.isnan(t.lo) or t.lo == t.hi:
        return f"{format_diff(t.mean_diff, frac)} (identical over seeds)"
    return f"{format_diff(t.mean_diff, frac)} (95 % interval {format_diff(t.lo, frac)} to {format_diff(t.hi, frac)})"


def _int(value: Any) -> int | None:
    return None if _is_missing(value) else int(value)


def candidate_name(discover: Mapping[str, Any]) -> str:
    """The candidate's stable name ("icon-1a2b3c4d"), or its rank when the row has none."""
    return str(discover.get("name") or f"candidate {discover.get('rank')}")


def write_csv(verdicts: list[Verdict], path: Path, formulas: Mapping[str, str] | None = None) -> Path:
    """discovered.csv: one line per (study, baseline, metric, candidate) with the family's verdict."""
    heads = ["study", "task", "dataset", "baseline", "metric", "higher_is_better", "candidate", "rank", "formula",
             "pairs", "mean_diff", "ci_lo", "ci_hi", "p_value", "p_holm", "outcome", "verdict"]
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(heads)
        for v in verdicts:
            for t in v.tests:
                out.writerow([v.study, v.task, v.dataset, v.baseline, v.metric, v.higher_is_better, t.name, t.rank,
                              (formulas or {}).get(t.name, ""), t.n, *(_cell(x) for x in (t.mean_diff, t.lo, t.hi,
                              t.p_value, t.p_holm)), t.outcome, v.text])
    return path


def _cell(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


# ----------------------------------------------------------------------------------------------
# A found loss as text
# ----------------------------------------------------------------------------------------------

#: Kernel parameters shown as a transform around the kernel: q = debias(cluster, 0.2).
_WRAPPERS = ("debias", "propagate")


def _num(x: Any) -> str:
    """12 -> '12', 0.4 -> '0.40', 0.001 -> '1.0e-3'."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        return str(x)
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    x = float(x)
    if 0.01 <= abs(x) < 1000:
        return f"{x:.2f}"
    return _sci(x)


def _sci(x: float) -> str:
    """0.001 -> '1.0e-3' (learning rates read best as powers of ten)."""
    mant, exp = f"{float(x):.1e}".split("e")
    return f"{mant}e{int(exp)}"


def component_text(spec: Any, wrappers: tuple[str, ...] = ()) -> str:
    """{"name": "knn", "k": 12} -> 'knn(k=12)'; wrapper parameters as transforms around it."""
    if not isinstance(spec, Mapping):
        return "default" if _is_missing(spec) else str(spec)
    params = {k: v for k, v in spec.items() if k != "name" and k not in wrappers and not _is_missing(v)}
    text = str(spec.get("name", "?")) + (f"({', '.join(f'{k}={_num(v)}' for k, v in params.items())})" if params else "")
    for w in wrappers:
        if not _is_missing(spec.get(w)) and spec.get(w) not in (0, 0.0, False):
            text = f"{w}({text}, {_num(spec[w])})"
    return text


def formula(loss: Mapping[str, Any]) -> str:
    """'p = knn(k=12), q = debias(cluster, 0.20), D = alpha(a=0.40); lr 1.0e-3'."""
    text = (f"p = {component_text(loss.get('p'), _WRAPPERS)}, q = {component_text(loss.get('q'), _WRAPPERS)}, "
            f"D = {component_text(loss.get('divergence'))}")
    return text + (f"; lr {_sci(loss['lr'])}" if not _is_missing(loss.get("lr")) else "")


def snippet(method: str, loss: Mapping[str, Any]) -> str:
    """The candidate as a suite method entry to paste: method, p, q, divergence, settings.lr (YAML)."""
    import yaml

    entry: dict[str, Any] = {"method": str(method)}
    for key in ("p", "q", "divergence"):
        if isinstance(loss.get(key), Mapping):
            entry[key] = {str(k): _plain(v) for k, v in loss[key].items()}
    if not _is_missing(loss.get("lr")):
        entry["settings"] = {"lr": float(loss["lr"])}
    return yaml.safe_dump(entry, default_flow_style=None, sort_keys=False, allow_unicode=True).strip()


def candidates(discovery: pd.DataFrame, study: str) -> list[dict[str, Any]]:
    """A study's candidates by rank: name, rank, val_value, loss, formula, snippet, base method, test seeds."""
    rows = discovery[(discovery["study"] == study) & (discovery["role"] == "candidate")]
    out: dict[str, dict[str, Any]] = {}
    for method, seed, d in zip(rows["method"], rows["seed"], rows["discover"]):
        name = candidate_name(d)
        loss = d.get("loss") if isinstance(d.get("loss"), Mapping) else {}
        rec = out.setdefault(name, {"name": name, "rank": _int(d.get("rank")), "val_value": d.get("val_value"),
                                    "loss": loss, "formula": formula(loss), "snippet": snippet(method, loss),
                                    "method": method, "seeds": []})
        rec["seeds"].append(_seed_key(seed))
    return sorted(out.values(), key=lambda r: (r["rank"] is None, r["rank"] or 0, r["name"]))

