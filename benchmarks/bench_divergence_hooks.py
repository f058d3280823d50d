"""What a divergence's structured hooks buy: one clustering step with TV as built in (pointwise, f0, term_q) and
the same TV with only `rows` (what a plugin without the hooks gets), side by side; ratios are without / with.

The step is bench_fast_path.py's: cluster q on (N, C) head logits, p = augmentation + kNN over a global
graph (debiased when --alpha > 0), forward + backward. CPU time (process time) per step, median of --reps.

    python benchmarks/bench_divergence_hooks.py                  # N = 1024, 4096 on the CPU, < 1 min
    python benchmarks/bench_divergence_hooks.py --sizes 8192 --alpha 0.6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_fast_path import make_batch

from icon_bench.loss.divergences import TV, Divergence
from icon_bench.loss.objective import ICon


class RowsOnlyTV(Divergence):
    """TV without pointwise / f0 / term_q: ICon can only take the dense path."""

    name = "tv_rows_only"
    bound = 1.0

    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return TV().rows(log_p, log_q)


def step_time(divergence: Divergence, batch: dict[str, torch.Tensor], k: int, alpha: float, reps: int) -> float:
    p = {"name": "mix", "kernels": ["augmentation", {"name": "knn", "k": k, "scope": "graph"}]}
    loss = ICon(p, "cluster", divergence, p_debias=alpha)
    times = []
    for rep in range(reps + 1):
        batch["embeddings"].grad = None
        t0 = time.process_time()
        loss(batch).backward()
        if rep:  # the first step warms the allocator
            times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"clusters {args.clusters}, k {args.k}, debias {args.alpha}, {args.threads} thread(s); CPU s per step")
    print(f"{'N':>6} {'with hooks':>11} {'rows only':>10} {'ratio':>6}")
    for n in args.sizes:
        batch = make_batch(n, args.clusters, 2, args.k, torch.device("cpu"))
        fast = step_time(TV(), batch, args.k, args.alpha, args.reps)
        dense = step_time(RowsOnlyTV(), batch, args.k, args.alpha, args.reps)
        print(f"{n:>6} {fast:>11.4f} {dense:>10.4f} {dense / fast:>6.1f}")


if __name__ == "__main__":
    main()
