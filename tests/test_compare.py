"""Paired comparisons (checked against scipy) and the tuned / defaults leaderboards of a tuned suite's report."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from ray_trials import tune_load, tune_trial
from scipy import stats

from icon_bench import cli
from icon_bench.report.commands import write_report
from icon_bench.report.compare import paired_comparisons, verdict
from icon_bench.report.rows import load_rows
from icon_bench.report.stats import paired_test
from icon_bench.run.suite.model import Suite
from icon_bench.runner import run_suite

# Five seeds; the seed effect (shared by both configurations of a seed) is far larger than the gap.
SEED_EFFECT = [0.10, -0.20, 0.30, 0.00, -0.15]
KL = [0.70 + e for e in SEED_EFFECT]
TV = [0.70 + e + d for e, d in zip(SEED_EFFECT, [0.031, 0.052, 0.018, 0.044, 0.035])]


def _row(method: str, divergence: str, seed: int, value: float, *, dataset: str = "digits", **extra) -> dict:
    spec = {"method": method, "dataset": {"name": dataset}, "divergence": divergence, "seed": seed, "p": {}, "q": {},
            "model": {}, "settings": {}, "evaluate": None}
    return {"trial_id": f"{method}-{divergence}-{dataset}-{seed}", "config_id": f"{method}-{divergence}-{dataset}",
            "spec": spec, "method": method, "dataset": dataset, "divergence": divergence, "seed": seed,
            "status": "ok", "metrics": {"hungarian": value, "distortion": 1.0 - value},
            "protocol": {"version": "2", "metrics": {"hungarian": {"higher_is_better": True, "fraction": True},
                                                     "distortion": {"higher_is_better": False, "fraction": False}}},
            **extra}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_paired_t_interval_and_p_value_equal_scipys() -> None:
    diffs = np.subtract(TV, KL)
    res = paired_test(diffs)
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert res["n"] == 5 and res["interval"] == "paired t (4 df)"
    assert res["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert (res["lo"], res["hi"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert res["p_value"] == pytest.approx(stats.ttest_rel(TV, KL).pvalue, rel=1e-9)


def test_many_seeds_keep_the_paired_t_interval() -> None:
    # A percentile bootstrap over 10-40 seeds is too narrow (it under-covers); the t interval holds at every n.
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.02, 0.03, size=40)
    res = paired_test(diffs)
    lo, hi = stats.t.interval(0.95, 39, loc=diffs.mean(), scale=stats.sem(diffs))
    assert res["interval"] == "paired t (39 df)"
    assert res["lo"] == pytest.approx(lo, abs=1e-12) and res["hi"] == pytest.approx(hi, abs=1e-12)


def test_verdicts_follow_the_corrected_p_value_and_the_metrics_direction() -> None:
    up = {"n": 5, "mean_diff": 0.03, "p_value": 0.001, "p_holm": 0.004}
    assert verdict(up) == "better" and verdict(up, lower_better=True) == "worse"
    assert verdict({**up, "p_holm": 0.2}) == "not separable at 5 seeds"  # raw p 0.001, but not after Holm
    assert verdict({"n": 2, "mean_diff": 0.5, "p_value": float("nan")}) == "too few pairs to separate (2 of 3)"
    same = {"n": 3, "mean_diff": -0.18, "p_value": 0.0, "identical": True}
    assert verdict(same) == "worse; identical over seeds: the seed does not change either result"


def test_comparisons_pair_by_seed_where_an_unpaired_test_would_separate_nothing() -> None:
    rows = [_row("pmi", "kl", s, v) for s, v in enumerate(KL)] + [_row("pmi", "tv", s, v) for s, v in enumerate(TV)]
    rows.reverse()  # order must not matter: pairs are found by seed
    table = paired_comparisons(_frame(rows), "divergence=kl")
    hung = table[table["metric"] == "hungarian"].iloc[0]
    assert (hung["configuration"], hung["baseline"], hung["n"]) == ("pmi · tv", "pmi · kl", 5)
    assert hung["p_value"] == pytest.approx(stats.ttest_rel(TV, KL).pvalue, rel=1e-9)
    assert hung["verdict"] == "better"
    assert stats.ttest_ind(TV, KL).pvalue > 0.5  # what an unpaired test would have said about the same numbers
    dist = table[table["metric"] == "distortion"].iloc[0]
    assert dist["verdict"] == "better" and dist["mean_diff"] < 0  # lower distortion is the better direction


def test_comparisons_keep_datasets_seeds_and_tuned_apart_from_defaults() -> None:
    rows = [_row("pmi", "kl", s, v) for s, v in enumerate(KL)]
    rows += [_row("pmi", "tv", s, v) for s, v in enumerate(TV[:3])]  # tv ran seeds 0-2 only
    rows += [_row("pmi", "tv", s, 0.9, dataset="iris") for s in range(5)]  # no kl baseline on iris
    tune = {"role": "final", "configuration": "t-tv", "budget": 4, "selected": {"lr": 0.01},
            "config_spec": {"method": "pmi", "dataset": {"name": "digits"}, "divergence": "tv"}}
    rows += [{**_row("pmi", "tv", s, 0.99), "trial_id": f"tuned-{s}", "tune": tune} for s in range(5)]
    table = paired_comparisons(_frame(rows), "divergence=kl", metrics=["hungarian"])
    assert len(table) == 1  # tuned tv has no tuned kl to pair with; iris has no baseline
    rec = table.iloc[0]
    assert (rec["dataset"], rec["kind"], rec["n"], rec["seeds"]) == ("digits", "defaults", 3, "0 1 2")


def test_lines_of_other_groups_name_what_tells_them_apart() -> None:
    # TV against KL at p.debias 0 and at 0.6 are two lines: both must say which is which.
    rows = []
    for debias in (0.0, 0.6):
        for div, base in (("kl", KL), ("tv", TV)):
            for seed, value in enumerate(base):
                row = _row("pmi", div, seed, value - debias)
                row["spec"]["p"] = {"debias": debias}
                row["trial_id"] += f"-{debias}"
                row["config_id"] += f"-{debias}"  # the store hashes the whole spec
                rows.append(row)
    table = paired_comparisons(_frame(rows), "divergence=kl", metrics=["hungarian"])
    assert sorted(table["configuration"]) == ["pmi · tv · p.debias=0.0", "pmi · tv · p.debias=0.6"]
    assert sorted(table["baseline"]) == ["pmi · kl · p.debias=0.0", "pmi · kl · p.debias=0.6"]


def test_compare_command_prints_the_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "res"
    store.mkdir()
    rows = [_row("pmi", d, s, v) for d, vals in (("kl", KL), ("tv", TV)) for s, v in enumerate(vals)]
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["compare", str(store), "--baseline", "divergence=kl", "--metric", "hungarian"]) == 0
    out = capsys.readouterr().out
    assert "pmi · tv" in out and "p (Holm)" in out and "better" in out and "+3.6" in out
    assert cli.main(["compare", str(store), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert {x["metric"] for x in lines} == {"hungarian", "distortion"}
    assert cli.main(["compare", str(store), "--baseline", "divergence=js"]) == 2
    assert "divergence values in the rows: kl, tv" in capsys.readouterr().err
    assert cli.main(["compare", str(store), "--baseline", "divergence"]) == 2
    assert "expects KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    assert "Holm-corrected over the lines" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


# ---------------------------------------------------------------------------------------------
# A tuned suite's report
# ---------------------------------------------------------------------------------------------
TUNED_REPORT = """
name: tuned-report
datasets: [digits]
seeds: [0, 1, 2]
grid:
  method: [pmi]
  divergence: [kl, tv]
settings: {epochs: 9}
tune:
  budget: 4
  space:
    lr: {loguniform: [1.0e-5, 1.0e-1]}
    optimizer: [adam, "<script>alert(1)</script>"]
  defaults: true
"""


def test_a_tuned_report_has_tuned_and_defaults_tables_the_selections_and_the_search(tmp_path: Path) -> None:
    # Built without the load-time checks, which refuse an optimizer no real trial could use: the fake
    # trials take it, so the hostile string reaches the report, where it must arrive escaped.
    suite = Suite.model_validate(yaml.safe_load(TUNED_REPORT))
    suite._root = tmp_path
    results, out_dir = tmp_path / "res", tmp_path / "report"
    code = run_suite(suite, results=results, report=False, progress=False, out=io.StringIO(), trial_fn=tune_trial,
                     load_fn=tune_load)
    assert code == 0
    write_report(results, out_dir, plots=False)
    md = (out_dir / "leaderboard.md").read_text()
    tuned = md.index("### digits — clustering, tuned (budget 4 on val)")
    defaults = md.index("### digits — clustering, defaults")
    assert tuned < defaults
    tuned_table = md[tuned:defaults]
    assert "selected on val" in tuned_table and "seed 0: lr=" in tuned_table and tuned_table.count("| pmi") == 0
    assert tuned_table.count("[pmi · tv]") == 1 and tuned_table.count("[pmi · kl]") == 1  # seeds aggregate
    assert "selected on val" not in md[defaults:md.index("## Paired comparisons")]
    assert "- **tuning**: 4 search trials per configuration and seed, random search (seed 0), over lr ~ " \
           "loguniform(1e-05, 0.1)" in md and "selected on val by hungarian" in md
    assert "- **trials**: 12 (12 ok, 0 failed) and 24 search trials on val" in md
    assert "## Paired comparisons against divergence=kl" in md and md.count("| pmi · tv ") == 2  # tuned, defaults
    assert (out_dir / "compare.csv").is_file()
    assert md.count('"tune": {"algorithm": "random", "budget": 4') == 2  # the tuned configurations say so
    page = (out_dir / "index.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in md + page
    assert "tuned (budget 4 on val)" in page and 'id="compare"' in page
    csv = pd.read_csv(out_dir / "leaderboard.csv")
    assert set(csv["kind"]) == {"tuned (budget 4 on val)", "defaults"}


# ---------------------------------------------------------------------------------------------
# Configurations that differ only in a component's parameter are never pooled (real trials)
# ---------------------------------------------------------------------------------------------
PARAMETER_SUITES = {
    "alpha": "[kl, {name: alpha, a: 0.5}, {name: alpha, a: 2.0}]",
    "renyi": "[kl, {name: renyi, alpha: 0.5}, {name: renyi, alpha: 2.0}]",  # the example plugin's divergence
}


@pytest.mark.parametrize("family", sorted(PARAMETER_SUITES))
def test_two_parameters_of_one_divergence_are_two_rows_and_two_lines(tmp_path: Path, family: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(f"""
        name: params-{family}
        datasets: [{{name: digits, subset: 300}}]
        seeds: [0, 1]
        grid:
          method: [pmi]
          divergence: {PARAMETER_SUITES[family]}
        settings: {{epochs: 1, heads: 1}}
        evaluate: [hungarian]
    """).lstrip())
    results = tmp_path / "res"
    assert run_suite(path, results=results, report=False, progress=False, out=io.StringIO()) == 0
    out = write_report(results, tmp_path / "report", plots=False)
    board = pd.read_csv(out / "leaderboard.csv")
    param = "a" if family == "alpha" else "alpha"
    assert sorted(board["label"]) == sorted(["pmi · kl", f"pmi · {family}({param}=0.5)", f"pmi · {family}({param}=2.0)"])
    table = paired_comparisons(load_rows(results), "divergence=kl", metrics=["hungarian"])
    assert len(table) == 2 and list(table["n"]) == [2, 2]  # one line per parameter, each seed once
    assert table["configuration"].nunique() == 2
    assert all(v.startswith("too few pairs") for v in table["verdict"])  # 2 seeds: nothing is separated


def test_k_means_as_the_baseline_pairs_every_other_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent("""
        name: against-kmeans
        datasets: [{name: digits, subset: 300}]
        seeds: [0, 1, 2]
        grid:
          method: [kmeans, spectral, pmi, debiased_infonce_clustering]
          divergence: [kl, tv]
        exclude:
          - {method: [kmeans, spectral], divergence: tv}
          - {method: debiased_infonce_clustering, divergence: tv}
        settings: {epochs: 1}
        evaluate: [hungarian]
    """).lstrip())
    results = tmp_path / "res"
    assert run_suite(path, results=results, report=False, progress=False, out=io.StringIO()) == 0
    table = paired_comparisons(load_rows(results), "method=kmeans", metrics=["hungarian"])
    # The grid gave k-means and spectral the divergence kl (they ignore it); labels show what the spec set.
    assert sorted(table["configuration"]) == ["debiased_infonce_clustering · kl", "pmi · kl", "pmi · tv",
                                              "spectral · kl"]
    assert set(table["baseline"]) == {"kmeans · kl"}
    assert list(table["n"]) == [3, 3, 3, 3]
    assert cli.main(["compare", str(results), "--baseline", "method=kmeans", "--metric", "hungarian"]) == 0
    assert "seeds to separate" in capsys.readouterr().out


def test_a_regenerated_report_keeps_the_baseline_it_compared_against(tmp_path: Path) -> None:
    store = tmp_path / "res"
    store.mkdir()
    rows = []
    for debias, base in ((0.0, KL), (0.6, TV)):
        for seed, value in enumerate(base):
            row = _row("simclr", "kl", seed, value)
            row["spec"]["p"] = {"debias": debias}
            row["trial_id"] += f"-{debias}"
            row["config_id"] += f"-{debias}"
            rows.append(row)
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    assert cli.main(["report", str(store), "-o", str(out), "--no-plots", "--baseline", "p.debias=0"]) == 0
    assert cli.main(["report", str(store), "-o", str(out), "--no-plots"]) == 0  # no --baseline: the same one
    assert "## Paired comparisons against p.debias=0" in (out / "leaderboard.md").read_text()
    assert set(pd.read_csv(out / "compare.csv")["against"]) == {"p.debias=0"}
