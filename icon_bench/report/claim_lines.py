"""Claims measured on the committed reports: paired contender and baseline rows, each line's verdict, claims.csv."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from icon_bench.report.claims import AXIS_KEYS, Claim
from icon_bench.report.compare import _same, family_lines, format_diff, needed_text
from icon_bench.report.pairing import (
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
    normalise_rows,
)
from icon_bench.report.stats import paired_test

__all__ = ["CONTRADICTED", "SUPPORTED", "claims_csv", "correct_claim", "measure_claim", "one_of", "raw_lines",
           "suite_rows"]

SUPPORTED, CONTRADICTED, CANNOT = "supported", "contradicted", "cannot separate"
#: claims.csv columns, in order (the README's lines, with the unscaled numbers beside the shown ones).
CSV_COLUMNS = ["claim", "paper", "statement", "metric", "expect", "published", "suite", "dataset", "protocol_version",
               "kind", "configuration", "baseline", "pairs", "difference", "interval", "mean_diff", "lo", "hi",
               "scale", "interval_method", "p_value", "p_holm", "family", "detectable", "seeds_to_separate", "seeds",
               "verdict"]


def suite_rows(suite_dir: Path) -> pd.DataFrame | None:
    """A report folder's rows (results.parquet, or results.json) that can pair: ok, not search, test split."""
    for name in ("results.parquet", "results.json"):
        path = suite_dir / name
        if path.is_file():
            raw = load_rows(path)
            df = without_search(normalise_rows(raw))
            return df[(df["status"] == "ok") & (df["split"] == "test")].reset_index(drop=True)
    return None


def _setting_key(key: str) -> str:
    """A grid's plain trainer-setting key ("epochs") as the spec holds it ("settings.epochs")."""
    return key if "." in key or key in AXIS_KEYS else f"settings.{key}"


def _matches(cfg: Mapping[str, Any], dataset: tuple[Any, ...], filters: Mapping[str, Any]) -> bool:
    """Every key of `filters` holds one of its values (a list: any of them; null: the key is not set).

    A divergence filter names the divergence ("alpha" matches alpha(a=0.5) and alpha(a=2)); the
    configurations stay apart, each on its own line.
    """
    for key, wanted in filters.items():
        if key == "dataset":
            values = list(dataset)
        else:
            value = key_value(cfg, _setting_key(key))
            values = [value] + ([str(value).split("(", 1)[0]] if key == "divergence" and value is not None else [])
        if not any(one_of(v, wanted) for v in values):
            return False
    return True


def one_of(value: Any, wanted: Any) -> bool:
    """Whether a filter's value (a list: any of them; null: not set) holds `value` (None: not set)."""
    options = wanted if isinstance(wanted, list) else [wanted]
    return any((value is None) if w is None else (value is not None and _same(value, w)) for w in options)


def _sides(claim: Claim, configs: dict[str, Config], dataset: tuple[Any, ...]) -> tuple[list[Config], list[Config]]:
    """A table's configurations matching the claim's `where`, split into contenders and baselines."""
    cont, base = [], []
    for c in configs.values():
        if not _matches(c.cfg, dataset, claim.where):
            continue
        if _matches(c.cfg, dataset, claim.contender):
            cont.append(c)
        elif _matches(c.cfg, dataset, claim.baseline):
            base.append(c)
    return cont, base


def measure_claim(claim: Claim, suite: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The claim's lines in one suite's rows with their verdicts, Holm-corrected over these lines."""
    return correct_claim(claim, raw_lines(claim, suite, rows))


def raw_lines(claim: Claim, suite: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The claim's measured lines in one suite's rows: one per (table, contender configuration), uncorrected.

    `correct_claim` then corrects the claim's lines from every suite together and gives the verdicts.
    """
    if rows.empty or f"metrics.{claim.metric}" not in rows.columns:
        return []
    fractions, lower = metric_kinds(rows)
    claim_keys = {_setting_key(k) for k in claim.compared_keys()}
    names = {str(r["dataset"]): str(r.get("dataset_name")) for r in rows.to_dict("records")}
    always = claim_keys | {_setting_key(k) for k, v in claim.where.items() if isinstance(v, list)}
    lines = []
    for table, configs in sorted(configurations(rows, claim.metric).items()):
        where = dict(zip(TABLE_KEYS, table))
        cont, base = _sides(claim, configs, (where["dataset"], names.get(where["dataset"])))
        label_all(cont + base, always=always - set(AXIS_KEYS))
        for c in sorted(cont, key=lambda e: e.label):
            b = pick_baseline(c, base, claim_keys)
            seeds = sorted(set(c.seeds) & set(b.seeds), key=str) if b else []
            if not seeds:
                continue
            res = paired_test([c.seeds[s] - b.seeds[s] for s in seeds])
            lines.append(_line(claim, suite, where, c.label, b.label, res, seeds, claim.metric in fractions,
                               claim.metric in lower))
    return lines


def correct_claim(claim: Claim, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm over a claim's lines (every suite and dataset together), then each line's verdict from its corrected p."""
    if not lines:
        return []
    tests = family_lines([{**line["_test"]} for line in lines], lines[0]["_lower"])
    out = []
    for line, test in zip(lines, tests):
        side = test["verdict"].split(";")[0]
        if side in ("better", "worse"):
            outcome = SUPPORTED if side == claim.expect else CONTRADICTED
        else:
            n = test["n"]
            outcome = f"{CANNOT} ({n} pair{'s' if n != 1 else ''})"
        if test.get("identical"):
            outcome += " (identical over seeds)"
        rec = {k: v for k, v in line.items() if not k.startswith("_")}
        rec.update(p_holm=test["p_holm"], family=test["family"], verdict=outcome,
                   detectable=format_diff(test["detectable"], rec["scale"] == 100).lstrip("+"),
                   seeds_to_separate=needed_text(test))
        out.append(rec)
    return out


def _line(claim: Claim, suite: str, where: Mapping[str, Any], label: str, base: str, res: Mapping[str, Any],
          seeds: list[Any], fraction: bool, lower_better: bool) -> dict[str, Any]:
    """One measured line before correction (`_test` and `_lower` feed `correct_claim`)."""
    interval = "–" if _is_missing(res["lo"]) or res.get("identical") else \
        f"[{format_diff(res['lo'], fraction)}, {format_diff(res['hi'], fraction)}]"
    return {
        "claim": claim.id, "paper": claim.paper, "statement": claim.statement, "metric": claim.metric,
        "expect": claim.expect, "suite": suite, "protocol_version": where["protocol_version"], "kind": where["kind"],
        "dataset": where["dataset"], "configuration": label, "baseline": base, "pairs": res["n"],
        "difference": format_diff(res["mean_diff"], fraction), "interval": interval, "mean_diff": res["mean_diff"],
        "lo": res["lo"], "hi": res["hi"], "scale": 100 if fraction else 1, "interval_method": res["interval"],
        "p_value": res["p_value"], "seeds": " ".join(_seed_text(s) for s in seeds), "verdict": "",
        "_test": dict(res), "_lower": lower_better,
    }


def _seed_text(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, float) and math.isfinite(seed) and seed.is_integer() else str(seed)


def claims_csv(lines: list[dict[str, Any]], published: Mapping[str, str], path: Path) -> Path:
    """reports/claims.csv: the README's measured lines, each with its claim's published figures as text."""
    frame = pd.DataFrame([{**line, "published": published.get(line["claim"], "")} for line in lines],
                         columns=CSV_COLUMNS)
    frame.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
    return path
