"""Rerun a sample of a committed report's trials and print stored against rerun metrics, side by side.

    python benchmarks/check_reproducible.py results/clustering_quick --trials 4

It reads a results store (results.jsonl: each row's spec as it ran, selected values included; a
report's flattened results.parquet does not keep whole specs).

Trials are drawn (seeded) from the report's ok test rows, run again in this process with one torch
thread on the CPU, and each metric is printed with its stored value and the largest difference.
On a CPU with one thread per trial (how the quick suites run) the difference is expected to be
exactly 0: the same seeds give the same numbers. Relative dataset paths in the rows resolve
against --base (default: the repository root, as the suites' paths do).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a results folder holding results.jsonl, or the file")
    parser.add_argument("--trials", type=int, default=4, help="how many trials to rerun (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample (default 0)")
    parser.add_argument("--base", default=str(REPO), help="folder relative dataset paths resolve against")
    args = parser.parse_args(argv)

    import torch

    from icon_bench.report.roles import without_search
    from icon_bench.report.rows import load_rows
    from icon_bench.run.execution.trial import run_trial

    torch.set_num_threads(1)
    rows = without_search(load_rows(args.results))
    rows = rows[(rows["status"] == "ok") & (rows["split"].fillna("test") == "test")]
    records = rows.to_dict("records")
    sample = random.Random(args.seed).sample(records, min(args.trials, len(records)))
    os.chdir(args.base)  # the rows keep dataset paths as the suite wrote them
    worst = 0.0
    print(f"{'trial':<58} {'metric':<16} {'stored':>10} {'rerun':>10} {'diff':>10}")
    for rec in sample:
        again = run_trial(rec["spec"], device="cpu")
        if again["status"] != "ok":
            print(f"{rec['trial_id']}: the rerun failed: {again.get('error')}")
            return 1
        div = rec.get('divergence')
        label = f"{rec['method']} {div if isinstance(div, str) else '-'} seed {rec['seed']} ({rec['trial_id'][:8]})"
        for metric, stored in sorted((rec.get("metrics") or {}).items()):
            if not isinstance(stored, (int, float)):
                continue
            value = again["metrics"].get(metric)
            diff = abs(float(value) - float(stored)) if isinstance(value, (int, float)) else float("inf")
            worst = max(worst, diff)
            print(f"{label:<58} {metric:<16} {stored:>10.6f} {value:>10.6f} {diff:>10.2e}")
    print(f"largest difference over {len(sample)} trials: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
