"""The papers' claims: the shipped claims.yaml, pairing and verdicts, the register_claims hook, the README section."""

from __future__ import annotations

import io
import re
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from icon_bench import hookimpl
from icon_bench.errors import IconBenchError
from icon_bench.hooks.registry import load_registry
from icon_bench.report.claim_lines import CONTRADICTED, SUPPORTED, measure_claim
from icon_bench.report.claims import (
    Claim,
    check_filter_key,
    load_claims,
    read_claims_file,
    validate_claims,
)
from icon_bench.report.claims_page import published_text
from icon_bench.report.index import build_index
from icon_bench.report.references import load_references
from icon_bench.report.rows import normalise_rows

CLAIM = {"id": "tv-beats-kl", "paper": "Beyond I-Con", "statement": "TV beats KL", "metric": "hungarian",
         "where": {"method": "pmi"}, "contender": {"divergence": "tv"}, "baseline": {"divergence": "kl"},
         "expect": "better"}
DECLARED = {"hungarian": {"higher_is_better": True, "fraction": True},
            "distortion": {"higher_is_better": False, "fraction": False}}


def _row(method: str, divergence: str | None, seed: int, value: float, *, metric: str = "hungarian",
         dataset: str = "digits", **spec: Any) -> dict[str, Any]:
    """A result row as the store writes it; `spec` holds dotted overrides (p__debias=0.6 -> p.debias)."""
    full: dict[str, Any] = {"method": method, "dataset": {"name": dataset}, "divergence": divergence, "seed": seed,
                            "split": "test"}
    for key, v in spec.items():
        head, _, rest = key.partition("__")
        full.setdefault(head, {})[rest] = v
    return {"trial_id": f"{method}-{divergence}-{seed}-{sorted(spec.items())}-{dataset}", "spec": full,
            "method": method, "divergence": divergence or "default", "seed": seed, "split": "test",
            "dataset_label": dataset, "status": "ok", "metrics": {metric: value},
            "protocol": {"version": "2", "metrics": DECLARED}}


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return normalise_rows(pd.DataFrame(rows))


def _pmi(tv: list[float], kl: list[float], **spec: Any) -> list[dict[str, Any]]:
    return [_row("pmi", "tv", s, v, **spec) for s, v in enumerate(tv)] + \
        [_row("pmi", "kl", s, v, **spec) for s, v in enumerate(kl)]


@pytest.mark.parametrize(("tv", "verdict"), [
    ([0.80, 0.82, 0.81], SUPPORTED),                          # clearly better
    ([0.50, 0.52, 0.49], CONTRADICTED),                       # clearly worse
    ([0.90, 0.55, 0.70], "cannot separate (3 pairs)"),        # noisy
])
def test_verdicts_follow_the_interval(tv: list[float], verdict: str) -> None:
    lines = measure_claim(Claim(**CLAIM), "suite", _frame(_pmi(tv, [0.70, 0.71, 0.69])))
    assert [line["verdict"] for line in lines] == [verdict]
    assert lines[0]["pairs"] == 3 and lines[0]["configuration"] == "pmi · tv" and lines[0]["baseline"] == "pmi · kl"


def test_one_pair_has_no_interval_and_cannot_separate() -> None:
    (line,) = measure_claim(Claim(**CLAIM), "suite", _frame(_pmi([0.9], [0.1])))
    assert line["verdict"] == "cannot separate (1 pair)" and line["interval"] == "–"


def test_a_lower_is_better_metric_flips_the_sides() -> None:
    claim = Claim(**{**CLAIM, "metric": "distortion"})
    rows = [_row("pmi", d, s, v, metric="distortion") for d, vals in (("tv", [1.0, 1.1, 1.05]), ("kl", [2.0, 2.12, 2.04]))
            for s, v in enumerate(vals)]
    (line,) = measure_claim(claim, "suite", _frame(rows))
    assert line["verdict"] == SUPPORTED and line["difference"] == "-1.003" and line["scale"] == 1


def test_the_interval_is_scipys_paired_t_interval() -> None:
    tv, kl = [0.80, 0.74, 0.86, 0.79], [0.70, 0.71, 0.72, 0.69]
    (line,) = measure_claim(Claim(**CLAIM), "suite", _frame(_pmi(tv, kl)))
    d = np.array(tv) - np.array(kl)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (line["lo"], line["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert line["mean_diff"] == pytest.approx(d.mean()) and line["interval_method"] == "paired t (3 df)"
    assert line["difference"] == f"{d.mean() * 100:+.1f}" and line["interval"] == f"[{lo * 100:+.1f}, {hi * 100:+.1f}]"


def test_each_debias_group_pairs_with_its_own_baseline() -> None:
    # At p.debias 0.6 TV is 0.1 above KL; at 0 it is 0.1 below: pairing across groups would mix them.
    rows = _pmi([0.80, 0.82, 0.79], [0.70, 0.71, 0.69], p__debias=0.6) + \
        _pmi([0.40, 0.42, 0.39], [0.50, 0.51, 0.49], p__debias=0.0)
    lines = measure_claim(Claim(**CLAIM), "suite", _frame(rows))
    got = {(x["configuration"], x["baseline"]): (round(x["mean_diff"], 6), x["verdict"]) for x in lines}
    assert got == {("pmi · tv · p.debias=0.0", "pmi · kl · p.debias=0.0"): (-0.096667, CONTRADICTED),
                   ("pmi · tv · p.debias=0.6", "pmi · kl · p.debias=0.6"): (0.103333, SUPPORTED)}


def test_a_method_pairs_with_another_method_sharing_no_setting() -> None:
    claim = Claim(**{**CLAIM, "where": {}, "contender": {"method": "debiased_infonce_clustering"},
                     "baseline": {"method": "kmeans"}})
    rows = [_row("debiased_infonce_clustering", "kl", s, 0.8 + s / 100, p__debias=d, settings__epochs=30)
            for s in range(3) for d in (0.2, 0.6)] + [_row("kmeans", None, s, 0.6) for s in range(3)]
    lines = measure_claim(claim, "suite", _frame(rows))
    assert [(x["configuration"], x["baseline"], x["pairs"], x["verdict"]) for x in lines] == [
        ("debiased_infonce_clustering · kl · p.debias=0.2", "kmeans", 3, SUPPORTED),
        ("debiased_infonce_clustering · kl · p.debias=0.6", "kmeans", 3, SUPPORTED),
    ]


def test_a_trainer_setting_filters_by_its_grid_name() -> None:
    rows = _pmi([0.8, 0.81], [0.7, 0.71], settings__epochs=30) + _pmi([0.3, 0.31], [0.5, 0.51], settings__epochs=5)
    lines = measure_claim(Claim(**{**CLAIM, "where": {"method": "pmi", "epochs": 30}}), "suite", _frame(rows))
    assert [(x["configuration"], round(x["mean_diff"], 6)) for x in lines] == [("pmi · tv", 0.1)]


def test_a_reports_flattened_rows_keep_tuned_and_defaults_apart() -> None:
    """results.parquet holds tune.role, tune.budget ... and an empty "tune" column for rows at defaults."""
    tuned = _pmi([0.8, 0.81], [0.7, 0.71])
    for r in tuned:
        r["trial_id"] += "-final"
        r["tune"] = {"role": "final", "budget": 4, "configuration": f"tuned-{r['divergence']}",
                     "config_spec": {k: v for k, v in r["spec"].items() if k != "seed"}}
    frame = pd.json_normalize(tuned + _pmi([0.3, 0.31], [0.5, 0.51]))
    frame["tune"] = None
    lines = measure_claim(Claim(**CLAIM), "suite", normalise_rows(frame))
    assert [(x["kind"], round(x["mean_diff"], 6)) for x in lines] == [("defaults", -0.2),
                                                                     ("tuned (budget 4 on val)", 0.1)]


def test_datasets_tuned_and_failed_rows_stay_apart() -> None:
    rows = _pmi([0.8, 0.81], [0.7, 0.71]) + _pmi([0.3, 0.31], [0.5, 0.51], dataset="mnist")
    rows[0]["status"], rows[0]["metrics"] = "failed", {}
    lines = measure_claim(Claim(**CLAIM), "suite", _frame(rows))
    assert [(x["dataset"], x["pairs"]) for x in lines] == [("digits", 1), ("mnist", 2)]


# ----------------------------------------------------------------------------------------------
# the shipped claims and bad input
# ----------------------------------------------------------------------------------------------
def test_the_shipped_claims_load_with_real_keys_and_resolve_their_published_figures() -> None:
    claims, problems = load_claims(strict=True)
    assert not problems and len(claims) >= 10
    refs = load_references(strict=True)
    for claim in claims:
        for key in [*claim.where, *claim.contender, *claim.baseline]:
            check_filter_key(key)  # raises on a key no trial spec has
        text, bad = published_text(claim, refs)
        assert not bad, bad
        assert text and (claim.published or claim.note)
    by_id = {c.id: c for c in claims}
    assert "+1.90" in published_text(by_id["icon-contrastive-debias-p"], refs)[0]  # t-SimCLR 92.9 vs 91.0
    assert "not among the verified references" in published_text(by_id["beyond-icon-pmi-tv"], refs)[0]


@pytest.mark.parametrize(("body", "message"), [
    ("  expect: up\n", r"claims\.yaml:7: claim 'pmi-tv': expect: Input should be 'better' or 'worse' \(got 'up'\)"),
    ("  expect: better\n  colour: red\n", r"claims\.yaml:8: claim 'pmi-tv': colour: Extra inputs are not permitted"),
    ("  expect: better\n  where: {method: pmi, epoch: 3}\n",
     r"claims\.yaml:8: claim 'pmi-tv': where: unknown key 'epoch'; did you mean 'epochs'\?"),
    ("  expect: better\n  metric: hungarain\n", None),  # an unknown metric: checked against the registered ones
])
def test_a_bad_claim_is_reported_with_file_line_id_and_key(tmp_path: Path, body: str, message: str | None) -> None:
    path = tmp_path / "claims.yaml"
    head = ("- id: pmi-tv\n  paper: P\n  statement: S\n  metric: hungarian\n  contender: {divergence: tv}\n"
            "  baseline: {divergence: kl}\n")
    if message is None:
        head = head.replace("  metric: hungarian\n", "")
        path.write_text(head + body)
        _, problems = validate_claims(read_claims_file(path), "x", ["hungarian", "nmi"])
        assert problems and problems[0].endswith("claim 'pmi-tv': metric: unknown metric 'hungarain'; did you mean "
                                                 "'hungarian'?")
        assert problems[0].startswith(f"{path}:7:")
        return
    path.write_text(head + body)
    _, problems = validate_claims(read_claims_file(path), "x")
    assert len(problems) == 1
    assert re.search(message, problems[0]), problems[0]


def test_sides_that_could_match_one_row_are_refused() -> None:
    _, problems = validate_claims([{**CLAIM, "baseline": {"divergence": ["kl", "tv"]}}], "set 'x'")
    assert problems == [("set 'x': entry 0: claim 'tv-beats-kl': entry: contender and baseline must name one key "
                         "with different values (else a row matches both)")]
    _, problems = validate_claims([{**CLAIM, "contender": {"method": "pmi", "divergence": "tv"}}], "set 'x'")
    assert "'method' is in both where and contender" in problems[0]


def test_a_yaml_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text("id: x\n")
    with pytest.raises(IconBenchError, match=r"claims\.yaml:1: expected a list of claims"):
        read_claims_file(path)


# ----------------------------------------------------------------------------------------------
# plugins and the README section
# ----------------------------------------------------------------------------------------------
HOSTILE = "<img src=x onerror=alert(1)> | pipe"


def _claims_plugin() -> types.ModuleType:
    module = types.ModuleType("claims_plugin")

    @hookimpl
    def register_claims(register: Any) -> None:
        register("hostile-claims", lambda: [
            {**CLAIM, "id": "plugin-tv", "statement": HOSTILE, "paper": "Plugin paper"},
            {**CLAIM, "id": "plugin-broken", "expect": "sideways"},
        ])
        register("raising-claims", lambda: 1 / 0)

    module.register_claims = register_claims
    return module


def test_register_claims_plugin_claims_reach_the_page_and_bad_ones_are_listed(tmp_path: Path) -> None:
    reg = load_registry(entry_points=False, extra_plugins={"claims_plugin": _claims_plugin()})
    suite = tmp_path / "reports" / "mine"
    suite.mkdir(parents=True)
    (suite / "leaderboard.md").write_text("# mine\n")
    frame = pd.json_normalize(_pmi([0.8, 0.82, 0.81], [0.7, 0.71, 0.69]))
    frame.to_parquet(suite / "results.parquet")  # flattened, as write_report stores the rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readme = build_index(tmp_path / "reports", registry=reg).read_text()
    assert sum("plugin-broken" in str(w.message) or "raising-claims" in str(w.message) for w in caught) == 2
    block = readme.split('<a id="claim-plugin-tv"></a>', 1)[1].split("###", 1)[0]
    assert "[mine](mine/leaderboard.md)" in block and "**supported**" in block
    assert HOSTILE not in readme and "&lt;img src=x onerror=alert(1)&gt; \\| pipe" in readme
    shown = readme.split("### Claims not shown", 1)[1]
    assert "claim 'plugin-broken': expect: Input should be 'better' or 'worse'" in shown
    assert "claim set 'raising-claims' (in process): ZeroDivisionError: division by zero" in shown
    csv = pd.read_csv(tmp_path / "reports" / "claims.csv")
    assert csv.loc[csv["claim"] == "plugin-tv", "verdict"].tolist() == [SUPPORTED]
    assert (csv["claim"] == "beyond-icon-pmi-tv").sum() == 1  # the shipped claim measures the same rows


def test_the_readme_section_is_built_from_a_tiny_real_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icon_bench.runner import run_suite

    suite = tmp_path / "suites" / "tiny.yaml"
    suite.parent.mkdir()
    suite.write_text(
        "name: tiny\ndatasets: [{name: digits, subset: 150}]\nseeds: [0, 1]\n"
        "grid: {method: [pmi], divergence: [kl, tv], epochs: 1, batch_size: 128}\n"
        "include: [{method: kmeans}]\nevaluate: [hungarian]\nresources: {cpus: 1, gpus: 0}\nexecutor: local\n"
    )
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    assert run_suite(suite, progress=False, out=io.StringIO(), report_dir=reports / "tiny") == 0
    first = build_index(reports).read_text()
    assert first.index("## Best configuration per dataset and task") < first.index("## Claims of the papers")
    block = first.split('<a id="claim-beyond-icon-pmi-tv"></a>', 1)[1].split("\n### ", 1)[0]
    row = next(line for line in block.splitlines() if line.startswith("| [tiny]"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[4:7] == ["pmi · tv", "pmi · kl", "2"]
    assert "**Summary** (verdicts after Holm's correction within each claim):" in first and "not run: " in first and "icon-contrastive-debias-p" in first
    csv = pd.read_csv(reports / "claims.csv")
    assert csv["claim"].tolist() == ["beyond-icon-pmi-tv"] and csv["pairs"].tolist() == [2]
    before = (reports / "README.md").read_bytes(), (reports / "claims.csv").read_bytes()
    build_index(reports)
    assert ((reports / "README.md").read_bytes(), (reports / "claims.csv").read_bytes()) == before
