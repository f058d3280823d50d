"""A simulation study of the statistics icon-bench prints (report/stats.py), at 2, 3, 5 and 10 seeds.

Synthetic rows with known effects: every configuration of a suite is one seed effect shared by all
configurations (as real runs share a data order and an initialisation per seed) plus its own noise.

- Null (every configuration from one distribution): how often `icon-bench compare` calls a
  configuration "better" than the baseline (three contenders, one family, Holm), how often a claim
  with three lines is "supported", and how often the rank bands separate any configuration from
  the best (5 and 10 configurations, Holm over all pairs). Each should be at most 5 %.
- Power: at the difference the report prints as detectable with 80 % power (one line, 5 %), the
  fraction of simulated suites whose paired t test separates it; and at a difference of one
  standard deviation, the power formula against the simulated rate.

Run: ``python benchmarks/bench_statistics.py [--reps 2000] [--seed 0]``. Figures, with their
Monte Carlo standard errors, are quoted in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from tabulate import tabulate

from icon_bench.report.compare import verdict
from icon_bench.report.stats import detectable_difference, holm, paired_test, power, rank_bands

SEEDS = (2, 3, 5, 10)


def suite(rng: np.random.Generator, k: int, n: int, shifts: list[float] | None = None) -> np.ndarray:
    """(k, n) values: a seed effect shared by all k configurations, plus noise, plus each one's shift."""
    shifts = shifts or [0.0] * k
    return rng.normal(0.0, 1.0, size=n) + rng.normal(0.0, 1.0, size=(k, n)) + np.asarray(shifts)[:, None]


def null_compare(rng: np.random.Generator, n: int, reps: int) -> tuple[float, float]:
    """(rate of suites with any "better", rate per line): three contenders against one baseline, Holm."""
    any_better, lines = 0, 0
    for _ in range(reps):
        x = suite(rng, 4, n)
        tests = [paired_test(x[c] - x[0]) for c in (1, 2, 3)]
        calls = [verdict({**t, "p_holm": p}) == "better" for t, p in zip(tests, holm([t["p_value"] for t in tests]))]
        any_better += any(calls)
        lines += sum(calls)
    return any_better / reps, lines / (3 * reps)


def null_claim(rng: np.random.Generator, n: int, reps: int) -> float:
    """Rate of claims with any "supported" line: a claim measured on three datasets (lines), Holm over them."""
    supported = 0
    for _ in range(reps):
        tests = [paired_test(np.subtract(*suite(rng, 2, n))) for _ in range(3)]
        supported += any(verdict({**t, "p_holm": p}) == "better" for t, p in zip(tests, holm([t["p_value"]
                                                                                            for t in tests])))
    return supported / reps


def null_ranks(rng: np.random.Generator, n: int, k: int, reps: int) -> tuple[float, float]:
    """(rate of tables where any configuration is separated from the best, rate per configuration)."""
    tables, configs = 0, 0
    for _ in range(reps):
        bands = rank_bands([dict(enumerate(row)) for row in suite(rng, k, n)])
        off = sum(not b["tied"] for b in bands)
        tables += off > 0
        configs += off
    return tables / reps, configs / ((k - 1) * reps)


def power_check(rng: np.random.Generator, n: int, reps: int) -> tuple[float, float, float, float]:
    """(printed detectable difference in sd units, rate separating it, formula power at 1 sd, rate at 1 sd).

    The paired differences have sd sqrt(2) here (two noises); the detectable difference is computed
    from that true sd, as a report computes it from the estimated one.
    """
    sd = math.sqrt(2.0)
    mde = detectable_difference(n, sd)
    if math.isnan(mde):
        return math.nan, math.nan, math.nan, math.nan
    at_mde = sum(paired_test(np.subtract(*suite(rng, 2, n, [mde, 0.0])))["p_value"] < 0.05 for _ in range(reps))
    at_sd = sum(paired_test(np.subtract(*suite(rng, 2, n, [sd, 0.0])))["p_value"] < 0.05 for _ in range(reps))
    return mde / sd, at_mde / reps, power(n, sd, sd), at_sd / reps


def _pct(value: float, reps: int) -> str:
    if math.isnan(value):
        return "–"
    se = math.sqrt(max(value * (1 - value), 1e-12) / reps)
    return f"{100 * value:.1f} ± {100 * se:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000, help="simulated suites per cell (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.process_time()
    null_rows, power_rows = [], []
    for n in SEEDS:
        comp_any, comp_line = null_compare(rng, n, args.reps)
        claim = null_claim(rng, n, args.reps)
        r5 = null_ranks(rng, n, 5, args.reps)
        r10 = null_ranks(rng, n, 10, args.reps // 2)
        null_rows.append([n, _pct(comp_any, args.reps), _pct(comp_line, 3 * args.reps), _pct(claim, args.reps),
                          _pct(r5[0], args.reps), _pct(r10[0], args.reps // 2), _pct(r10[1], 9 * (args.reps // 2))])
        mde, at_mde, formula, at_sd = power_check(rng, n, args.reps)
        power_rows.append([n, "–" if math.isnan(mde) else f"{mde:.2f}", _pct(at_mde, args.reps),
                           "–" if math.isnan(formula) else f"{100 * formula:.1f}", _pct(at_sd, args.reps)])
    print(f"Null: rates in % (± one Monte Carlo standard error), {args.reps} simulated suites per cell")
    print(tabulate(null_rows, headers=["seeds", "compare: any better", "compare: per line", "claim supported",
                                       "ranks k=5: any separated", "ranks k=10: any separated",
                                       "ranks k=10: per config"], tablefmt="github"))
    print("\nPower of one paired comparison at 5 %")
    print(tabulate(power_rows, headers=["seeds", "detectable (sd of differences)", "separated at it (target 80)",
                                        "formula at 1 sd", "simulated at 1 sd"], tablefmt="github"))
    print(f"\nCPU time {time.process_time() - start:.1f} s")


if __name__ == "__main__":
    main()
