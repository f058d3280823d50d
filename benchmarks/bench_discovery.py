"""Loss discovery's two acceptance checks at scale: the null check (how often an equal candidate is called
better) and the planted winner (how often the search finds the planted region and the confirmation calls it
better), with Monte Carlo standard errors.

- Null: K candidates and a baseline drawn from one distribution at n confirmation seeds, judged by
  ``report.discovered.verdict`` (paired t by seed, Holm over the K candidates). The rate of "found a loss
  better than X" should be at most 5 %.
- Planted winner: tests/ray_trials.py's ``discover_trial`` landscape (alpha wins by up to 0.15 at
  a = 0.7; every other loss scores the same), the test's suite (five divergences and kNN k, budget 16,
  ASHA off), over many search seeds: the share whose best candidate on val is alpha with |a - 0.7| < 0.1,
  and the share whose confirmation at 5 fresh seeds then calls it better than both named methods.

Run: ``python benchmarks/bench_discovery.py [--null 2000] [--planted 20] [--budgets 16 24]`` from the repository
root (``--null 0`` skips the null check).
Figures are quoted in docs/discovery.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def null_rate(runs: int, k: int, seeds: int) -> tuple[float, float]:
    from test_discover import null_rows

    from icon_bench.report.discovered import BETTER, verdict

    rng = np.random.default_rng(1)
    better = sum(verdict(null_rows(rng, k=k, seeds=seeds), metrics=["hungarian"])[0].outcome == BETTER
                 for _ in range(runs))
    rate = better / runs
    return rate, (rate * (1 - rate) / runs) ** 0.5


def planted(search_seeds: int, budget: int) -> tuple[int, int]:
    from ray_trials import discover_trial
    from test_discover import SUITE

    from icon_bench.report.discovered import BETTER, verdict
    from icon_bench.run.discovery.confirm import top_candidates
    from icon_bench.run.discovery.run import plan_studies
    from icon_bench.run.discovery.search import search_rows
    from icon_bench.run.execution.store import ResultsStore
    from icon_bench.run.suite.reader import load_suite
    from icon_bench.runner import run_suite

    found = confirmed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(search_seeds):
            path = Path(tmp) / f"s{seed}.yaml"
            text = SUITE.replace("  seed: 0", f"  seed: {seed}").replace("budget: 16", f"budget: {budget}")
            path.write_text(textwrap.dedent(text))
            results = Path(tmp) / f"r{seed}"
            run_suite(path, results=results, report=False, progress=False, out=io.StringIO(), trial_fn=discover_trial)
            rows = ResultsStore(results).rows()
            (study,) = plan_studies(load_suite(path))
            best = top_candidates(study, search_rows(rows, study.study_id), 1)[0]["values"]
            hit = best["divergence"] == "alpha" and abs(best["divergence.a"] - 0.7) < 0.1
            found += hit
            confirmed += hit and all(v.outcome == BETTER for v in verdict(rows, metrics=["hungarian"]))
    return found, confirmed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--null", type=int, default=2000, help="simulated studies for the null check (0: skip it)")
    ap.add_argument("--planted", type=int, default=20, help="search seeds for the planted winner")
    ap.add_argument("--budgets", type=int, nargs="+", default=[16, 24], help="search budgets for the planted winner")
    args = ap.parse_args()
    t0 = time.process_time()
    for k, seeds in ((1, 5), (3, 5), (3, 10), (5, 5)) if args.null else ():
        rate, se = null_rate(args.null, k, seeds)
        print(f"null: K={k} candidates, {seeds} seeds, {args.null} studies: 'better' in {100 * rate:.2f} % "
              f"(Monte Carlo s.e. {100 * se:.2f} points)")
    for budget in args.budgets:
        found, confirmed = planted(args.planted, budget)
        print(f"planted winner, budget {budget}: found in {found} of {args.planted} search seeds; confirmed better "
              f"than both named methods in {confirmed}")
    print(f"CPU time {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
