"""The "Claims of the papers" section of reports/README.md: the rule, a summary, a table per claim, published figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tabulate import tabulate

from icon_bench.errors import UnknownNameError
from icon_bench.report.claim_lines import (
    CANNOT,
    CONTRADICTED,
    SUPPORTED,
    claims_csv,
    correct_claim,
    raw_lines,
    one_of,
    suite_rows,
)
from icon_bench.report.claims import Claim, load_claims
from icon_bench.report.stats import MIN_PAIRS
from icon_bench.report.formatting import _md
from icon_bench.report.references import Reference, load_references

__all__ = ["claims_section", "published_text"]

EXPLANATION = (
    "Each claim is checked inside one suite's committed rows (results.parquet: status ok, tuning searches left "
    "out, test split) that match its `where`. A contender configuration pairs with a baseline configuration of "
    "the same protocol version, kind (tuned or defaults), dataset and split, seed by seed, each seed once: the "
    "baseline that agrees with it on every setting both set, the claim's own keys aside (PMI under TV at "
    "p.debias 0.6 pairs with PMI under KL at p.debias 0.6). A configuration is every setting that differs "
    "(alpha(a=0.5) and alpha(a=2) are two lines, never pooled). The difference is the mean over pairs of "
    "contender − baseline (×100 for fractions), with a 95 % paired t interval (none below "
    f"{MIN_PAIRS} pairs). The lines of one claim are one family: their paired t p-values are Holm-corrected "
    "together (p (Holm); raw p-values in claims.csv), and a line **supports** its claim when its corrected "
    "p-value is below 0.05 on the side the paper claims (better in the metric's own direction, which the rows "
    "declare), **contradicts** it when it is below 0.05 on the other side, and **cannot separate** the two "
    "otherwise. Seeds to separate: the number of seeds at which the observed difference would be found with "
    "80 % power at 5 % / lines (from the paired standard deviation; \"more than 50\" when that many would not "
    "do). Lines whose every seed gives the same difference say \"identical over seeds\". These are "
    "small runs (scikit-learn digits, MNIST subsets, CPU budgets), not the papers' scale (ImageNet-1K or "
    "CIFAR-10 with ResNets and ViTs on GPUs): a verdict says what the committed runs show, not whether a paper "
    "is right. Published figures come only from `icon-bench references` and stand beside the measured "
    "differences, never compared with them. Claims are data: icon_bench/report/claims.yaml and plugins' "
    "`register_claims`."
)
TABLE_HEADERS = ["suite", "dataset", "protocol", "kind", "configuration", "baseline", "pairs", "difference",
                 "95 % interval", "p (Holm)", "verdict", "seeds to separate"]


def _entry_value(ref: Reference, key: str) -> Any:
    return getattr(ref, key) if key in Reference.model_fields else ref.setting.get(key)


def _entries(refs: Iterable[Reference], filters: Mapping[str, Any], metric: str) -> list[Reference]:
    return [r for r in refs if r.metric == metric and all(one_of(_entry_value(r, k), w) for k, w in filters.items())]


def published_text(claim: Claim, refs: list[Reference]) -> tuple[str, list[str]]:
    """The claim's published figures as one line of plain text, and problems (unknown set, no entry matched)."""
    pub = claim.published
    if pub is None:
        return (claim.note or "none given"), []
    in_set = [r for r in refs if r.origin.startswith(pub.set + " (")]
    if not in_set:
        sets = sorted({r.origin.split(" (", 1)[0] for r in refs})
        return "–", [f"claim {claim.id!r}: published.set: {UnknownNameError('reference set', pub.set, sets)}"]
    metric = pub.metric or claim.metric
    sides = {s: None if f is None else _entries(in_set, f, metric)
             for s, f in (("contender", pub.contender), ("baseline", pub.baseline))}
    problems = [f"claim {claim.id!r}: published.{s}: no entry of set {pub.set!r} with metric {metric!r} matches"
                for s, found in sides.items() if found == []]
    keys = list(dict.fromkeys(r.key for found in sides.values() for r in (found or [])))
    parts = []
    for key in keys:
        cont, base = ([r for r in sides[s] or [] if r.key == key] for s in ("contender", "baseline"))
        text = f"{key}: {_values(cont)} vs {_values(base)}"
        if len(cont) == 1 and len(base) == 1:
            text += f" (difference {cont[0].value - base[0].value:+.2f})"
        parts.append(text)
    table = in_set[0].table or "table not verified"
    missing = " The baseline's figure is not among the verified references." if sides["baseline"] is None else ""
    note = f" {claim.note}" if claim.note else ""
    return f"{'; '.join(parts)} ({metric} as published, set {pub.set}, {table}).{missing}{note}", problems


def _values(refs: list[Reference]) -> str:
    if not refs:
        return "–"
    if len(refs) == 1:
        return refs[0].value_text()
    return ", ".join(f"{r.label()} {r.value_text()}" for r in refs)


def _counts(lines: list[dict[str, Any]]) -> tuple[int, int, int]:
    verdicts = [line["verdict"] for line in lines]
    return (sum(v.startswith(SUPPORTED) for v in verdicts), sum(v.startswith(CONTRADICTED) for v in verdicts),
            sum(v.startswith(CANNOT) for v in verdicts))


def claims_section(root: Path, suites: list[Path], *, registry: Any = None) -> tuple[list[str], list[str]]:
    """The section's Markdown lines (and reports/claims.csv written beside it), and the problems met on the way.

    Reason: explanation, summary table and per-claim tables are one document read top to bottom;
    the measuring is in claim_lines.py, so what is left here is layout.
    """
    import warnings

    claims, problems = load_claims(registry)
    with warnings.catch_warnings(record=True) as caught:  # a bad reference set is reported with the claims
        warnings.simplefilter("always")
        refs = load_references(registry)
    problems += [str(w.message) for w in caught]
    rows = {d.name: suite_rows(d) for d in suites}
    per_claim: dict[str, list[dict[str, Any]]] = {}
    published: dict[str, str] = {}
    for claim in claims:
        published[claim.id], bad = published_text(claim, refs)
        problems += bad
        per_claim[claim.id] = correct_claim(claim, [line for name, df in rows.items() if df is not None
                                                    for line in raw_lines(claim, name, df)])
    every = [line for claim in claims for line in per_claim[claim.id]]
    claims_csv(every, published, root / "claims.csv")
    s, c, u = _counts(every)
    not_run = [claim.id for claim in claims if not per_claim[claim.id]]
    lines = ["## Claims of the papers", "", EXPLANATION, "",
             (f"**Summary** (verdicts after Holm's correction within each claim): {s} supported, {c} contradicted, "
              f"{u} cannot separate, over {len(every)} measured line(s) of {len(claims) - len(not_run)} claim(s); not run: "
              f"{', '.join(_md(i) for i in not_run) or 'none'}. Every line is in [claims.csv](claims.csv)."), ""]
    summary = []
    for claim in claims:
        k = _counts(per_claim[claim.id])
        measured = f"{k[0]} / {k[1]} / {k[2]}" if per_claim[claim.id] else "not run"
        summary.append([f"[{_md(claim.id)}](#claim-{claim.id})", _md(claim.statement), _md(claim.paper),
                        claim.metric, measured])
    if summary:
        headers = ["claim", "statement", "paper", "metric", "supported / contradicted / cannot separate"]
        lines += [tabulate(summary, headers=headers, tablefmt="github", disable_numparse=True), ""]
    for claim in claims:
        lines += _claim_block(claim, per_claim[claim.id], published[claim.id])
    if problems:
        lines += ["### Claims not shown", "", *[f"- {_md(p)}" for p in problems], ""]
    return lines, problems


def _claim_block(claim: Claim, lines: list[dict[str, Any]], published: str) -> list[str]:
    side = "above" if claim.expect == "better" else "below"
    out = [f'### <a id="claim-{claim.id}"></a>{_md(claim.id)}: {_md(claim.statement)}', "",
           f"{_md(claim.paper)}. Claimed: the contender scores {side} the baseline on {_md(claim.metric)} "
           f"(contender {_md(_filters(claim.contender))}, baseline {_md(_filters(claim.baseline))}"
           + (f", where {_md(_filters(claim.where))}" if claim.where else "") + f"). From {_md(claim.origin)}.", "",
           f"Published: {_md(published)}", ""]
    if not lines:
        return out + ["Not run: no committed suite has paired rows for this claim.", ""]
    body = [[f"[{_md(x['suite'])}]({quote(x['suite'])}/leaderboard.md)", _md(x["dataset"]), _md(x["protocol_version"]),
             _md(x["kind"]), _md(x["configuration"]), _md(x["baseline"]), str(x["pairs"]),
             x["difference"] + (" (×100)" if x["scale"] == 100 else ""), x["interval"], _p(x["p_holm"]),
             f"**{x['verdict']}**" if x["verdict"].startswith((SUPPORTED, CONTRADICTED)) else x["verdict"],
             x["seeds_to_separate"]] for x in lines]
    return out + [tabulate(body, headers=TABLE_HEADERS, tablefmt="github", disable_numparse=True), ""]


def _p(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.3g}"


def _filters(filters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={'|'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in filters.items())
