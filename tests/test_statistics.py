"""The statistics icon-bench prints, checked against scipy, closed forms and simulation.

Simulations here are small (a few seconds); benchmarks/bench_statistics.py runs the full study at
2, 3, 5 and 10 seeds and docs/statistics.md reports its figures.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from icon_bench import cli
from icon_bench.report.compare import family_lines, paired_comparisons, verdict
from icon_bench.report.stats import (
    MIN_PAIRS,
    detectable_difference,
    holm,
    paired_test,
    power,
    rank_bands,
    seeds_needed,
)


def test_holm_matches_its_definition_on_a_worked_example() -> None:
    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept monotone: 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, float("nan"), 0.01])[1] != holm([0.5, float("nan"), 0.01])[1]  # NaN stays out (and NaN)
    assert holm([0.5, float("nan"), 0.01])[2] == pytest.approx(0.02)  # a family of two, not three


def test_paired_test_below_three_pairs_and_identical_differences() -> None:
    two = paired_test([0.1, 0.3])
    assert two["n"] == 2 and math.isnan(two["lo"]) and math.isnan(two["p_value"]) and two["sd"] > 0
    same = paired_test([-0.182, -0.182, -0.182])
    assert same["identical"] and same["p_value"] == 0.0 and same["interval"] == "none (identical over seeds)"
    none = paired_test([0.0, 0.0, 0.0])
    assert none["identical"] and none["p_value"] == 1.0


def test_power_matches_a_monte_carlo_of_the_paired_t_test() -> None:
    rng = np.random.default_rng(0)
    n, sd, diff, reps = 5, 2.0, 2.5, 20_000
    d = rng.normal(diff, sd, size=(reps, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    empirical = float((p < 0.05).mean())
    assert power(n, diff, sd) == pytest.approx(empirical, abs=0.01)  # MC sd 0.0035


def test_detectable_difference_has_the_target_power_and_seeds_needed_is_the_first_enough() -> None:
    mde = detectable_difference(5, 1.0)
    assert power(5, mde, 1.0) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(detectable_difference(2, 1.0))  # below 3 pairs nothing is separated
    n = seeds_needed(0.5, 1.0)
    assert n is not None and power(n, 0.5, 1.0) >= 0.8 > power(n - 1, 0.5, 1.0)
    assert seeds_needed(0.01, 1.0) is None  # more than 50 seeds
    assert seeds_needed(10.0, 1.0) == MIN_PAIRS  # never fewer than the pairs a verdict needs


def test_rank_bands_never_separate_at_two_seeds_and_separate_a_clear_gap() -> None:
    two = rank_bands([{0: 0.9, 1: 0.91}, {0: 0.1, 1: 0.11}])
    assert [(b["lo"], b["hi"], b["tied"]) for b in two] == [(1, 2, True), (1, 2, True)]
    three = rank_bands([{0: 0.9, 1: 0.91, 2: 0.93}, {0: 0.1, 1: 0.12, 2: 0.11}, {}])
    assert [(b["rank"], b["lo"], b["hi"], b["tied"]) for b in three[:2]] == [(1, 1, 1, True), (2, 2, 2, False)]
    assert three[2]["rank"] is None
    lower = rank_bands([{0: 1.0, 1: 1.1, 2: 1.05}, {0: 3.0, 1: 3.2, 2: 3.05}], lower_better=True)
    assert [b["rank"] for b in lower] == [1, 2]


def _null_suite(rng: np.random.Generator, k: int, n: int) -> list[dict[str, float]]:
    """k configurations drawn from one distribution, with a seed effect shared by all (as real runs have)."""
    seed_effect = rng.normal(0.0, 1.0, size=n)
    return [dict(enumerate(seed_effect + rng.normal(0.0, 1.0, size=n))) for _ in range(k)]


@pytest.mark.parametrize("n", [3, 5])
def test_under_the_null_no_configuration_is_separated_from_the_best_more_than_5_percent(n: int) -> None:
    rng = np.random.default_rng(n)
    reps, k = 600, 5
    any_separated = sum(not all(b["tied"] for b in rank_bands(_null_suite(rng, k, n))) for _ in range(reps))
    # Holm over all pairs bounds the chance of ANY false separation at 5 %; +3 MC sd (0.9 points at 600).
    assert any_separated / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


def _rows(values: dict[str, dict[int, float]], dataset: str = "digits") -> pd.DataFrame:
    rows = []
    for name, by_seed in values.items():
        method, _, div = name.partition(":")
        for seed, value in by_seed.items():
            spec = {"method": method, "dataset": {"name": dataset}, "divergence": div or None, "seed": seed}
            rows.append({"trial_id": f"{name}-{seed}", "config_id": name, "spec": spec, "method": method,
                         "dataset": dataset, "divergence": div or "default", "seed": seed, "status": "ok",
                         "metrics": {"hungarian": value},
                         "protocol": {"version": "2", "metrics": {"hungarian": {"higher_is_better": True,
                                                                                "fraction": True}}}})
    return pd.DataFrame(rows)


def test_under_the_null_compare_calls_a_configuration_better_at_most_5_percent() -> None:
    # compare's verdicts: a family of lines against one baseline, Holm-corrected (family_lines), here two
    # contenders against KL at 3 and 5 seeds; one pass through paired_comparisons checks it is the same rule.
    rng = np.random.default_rng(7)
    reps = 2000
    for n in (3, 5):
        better = 0
        for _ in range(reps):
            kl, tv, js = _null_suite(rng, 3, n)
            tests = [paired_test([c[s] - kl[s] for s in range(n)]) for c in (tv, js)]
            # family_lines' verdict rule without its power figures (a root-find per line: slow here)
            better += any(verdict({**t, "p_holm": p}) == "better" for t, p in zip(tests, holm([t["p_value"]
                                                                                             for t in tests])))
        assert better / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    kl, tv, js = _null_suite(rng, 3, 5)
    table = paired_comparisons(_rows({"pmi:kl": kl, "pmi:tv": tv, "pmi:js": js}), "divergence=kl")
    expected = family_lines([paired_test([c[s] - kl[s] for s in range(5)]) for c in (js, tv)], lower_better=False)
    assert sorted(table["p_holm"]) == pytest.approx(sorted(x["p_holm"] for x in expected))


def test_property_no_pairing_uses_a_seed_twice_or_pools_two_configurations() -> None:
    rng = np.random.default_rng(11)
    for _ in range(15):
        values = {}
        for name in rng.choice(["pmi:kl", "pmi:tv", "pmi:js", "kmeans", "spectral", "dic:kl", "dic:tv"],
                               size=int(rng.integers(2, 7)), replace=False):
            seeds = rng.choice(8, size=int(rng.integers(1, 8)), replace=False)
            values[str(name)] = {int(s): float(rng.normal()) for s in seeds}
        for baseline in ("divergence=kl", "method=kmeans", "method=pmi"):
            table = paired_comparisons(_rows(values), baseline)
            for line in table.to_dict("records"):
                seeds = [int(s) for s in line["seeds"].split()]
                assert len(seeds) == len(set(seeds)) == line["n"]  # each seed once
                assert set(seeds) <= set(values[line["config_id"]]) & set(values[line["baseline_id"]])
                assert line["config_id"] != line["baseline_id"]
            assert not table.duplicated(["config_id", "metric"]).any()  # one line per configuration


def test_another_method_as_baseline_pairs_every_configuration_of_the_others() -> None:
    rng = np.random.default_rng(2)
    base = {s: 0.6 + 0.01 * s for s in range(3)}
    values = {"kmeans": base, "spectral": {s: 0.5 + 0.01 * s for s in range(3)}}
    for name in ("pmi:kl", "pmi:tv", "dic:kl"):
        values[name] = {s: 0.7 + rng.normal(0, 0.01) for s in range(3)}
    table = paired_comparisons(_rows(values), "method=kmeans")
    assert sorted(table["configuration"]) == ["dic · kl", "pmi · kl", "pmi · tv", "spectral"]
    assert set(table["baseline"]) == {"kmeans"} and set(table["n"]) == {3}
    spectral = table[table["configuration"] == "spectral"].iloc[0]
    assert spectral["identical"] and spectral["verdict"].startswith("worse; identical over seeds")


def test_compare_plan_prints_the_power_table(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "res"
    store.mkdir()
    values = {"pmi:kl": {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71}, "pmi:tv": {0: 0.71, 1: 0.74, 2: 0.69, 3: 0.73}}
    (store / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(values).to_dict("records")))
    assert cli.main(["compare", str(store), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "sd of differences" in out and "detectable (80 % power)" in out and "seeds to separate" in out
    line = next(x for x in out.splitlines() if x.startswith("pmi · tv"))
    d = np.subtract([0.71, 0.74, 0.69, 0.73], [0.70, 0.72, 0.69, 0.71])
    needed = seeds_needed(d.mean(), d.std(ddof=1))
    assert line.split()[-1] == str(needed) and "p (Holm)" not in out
