"""pmi's training step (sparse global-kNN p, cluster q, 10 heads) under kl, tv, js and hellinger: the
path before the structured forms (heads one by one; KL by q row blocks, the others dense) against
the current one (every head in one pass; q only at p's support), side by side, values checked equal.

    python benchmarks/bench_pmi_step.py                       # 1,024 anchors + 2 neighbours each, 1 thread
    python benchmarks/bench_pmi_step.py --debias 0.6          # p and q debiased: the N x N is real
    python benchmarks/bench_pmi_step.py --anchors 4096 --clusters 100 --device cuda

With ``--debias`` p has a uniform share, so every column of q counts: "before" is then the path the
divergences other than KL took until the fused row sums covered them (q row blocks, checkpointed,
heads one by one; KL's before is the same row-block path), "now" the fused row sums, all heads at once.

Each step is the loss forward and backward on fixed head logits (the loss's own cost; the trunk is
the same for both paths). CPU time per step is the median over repeats, in one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from icon_bench.loss.objective import ICon
from icon_bench.train.heads import MultiHead


def make_batch(anchors: int, neighbours: int, clusters: int, heads: int, k: int, device: str, seed: int = 0) -> dict:
    """anchors + `neighbours` graph neighbours of each, as the trainer draws a pmi batch."""
    g = torch.Generator().manual_seed(seed)
    n_data = anchors * 8
    graph = torch.randint(0, n_data, (n_data, k), generator=g)
    a = torch.randperm(n_data, generator=g)[:anchors]
    drawn = graph[a][:, torch.randint(0, k, (neighbours,), generator=g)].reshape(-1)
    index = torch.cat([a, drawn])
    logits = torch.randn(index.numel(), heads * clusters, generator=g) * 3.0
    return {
        "embeddings": logits.to(device).requires_grad_(True),
        "index": index.to(device),
        "neighbors": graph[index].to(device),
        "inputs": torch.zeros(index.numel(), 1, device=device),
    }


def make_loss(div: str, heads: int, k: int, old: bool, debias: float = 0.0) -> MultiHead:
    p = ("knn", {"k": k, "scope": "graph"})
    if debias:
        loss = ICon(p, "cluster", div, p_debias=debias, q_debias=debias)
        if old:
            loss.forms = frozenset({"blocks"})
        return MultiHead(loss, heads)
    if old:
        # Before: only KL had a structured form (q row blocks), the others ran dense; heads looped.
        loss = ICon(("knn", {"k": k, "scope": "graph"}), "cluster", div, fast="auto" if div == "kl" else False)
        loss.forms = frozenset({"blocks"})
    else:
        loss = ICon(("knn", {"k": k, "scope": "graph"}), "cluster", div)
    return MultiHead(loss, heads)


def time_step(loss: MultiHead, batch: dict, repeats: int, old: bool) -> tuple[float, float]:
    """(median CPU seconds per step, loss value)."""
    times, value = [], 0.0
    for _ in range(repeats + 1):
        batch["embeddings"].grad = None
        t0 = time.process_time()
        if old:
            z = batch["embeddings"]
            v = torch.stack([loss.loss({**batch, "embeddings": loss.head(z, h)}) for h in range(loss.heads)]).sum()
        else:
            v = loss(batch)
        v.backward()
        times.append(time.process_time() - t0)
        value = float(v.detach())
    return statistics.median(times[1:]), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", type=int, default=1024)
    ap.add_argument("--neighbours", type=int, default=2)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--divergences", nargs="+", default=["kl", "tv", "js", "hellinger"])
    ap.add_argument("--debias", type=float, default=0.0, help="alpha of the uniform share in p and in q")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.anchors, args.neighbours, args.clusters, args.heads, args.k, args.device)
    n = batch["index"].numel()
    print(f"pmi step: {n} rows ({args.anchors} anchors + {args.neighbours} neighbours each), {args.clusters} clusters, "
          f"{args.heads} heads, k={args.k}, debias {args.debias}, {args.device}, {args.threads} thread(s); "
          f"CPU ms per step (median of {args.repeats})")
    print(f"{'divergence':<11}{'before ms':>11}{'now ms':>9}{'speed-up':>10}{'now / kl now':>14}  values agree")
    kl_now = None
    for div in args.divergences:
        t_old, v_old = time_step(make_loss(div, args.heads, args.k, True, args.debias), batch, args.repeats, True)
        t_new, v_new = time_step(make_loss(div, args.heads, args.k, False, args.debias), batch, args.repeats, False)
        kl_now = t_new if div == "kl" else kl_now
        ratio = f"{t_new / kl_now:.2f}x" if kl_now else "-"
        agree = abs(v_old - v_new) <= 1e-5 * max(1.0, abs(v_old))
        print(f"{div:<11}{t_old * 1e3:>11.1f}{t_new * 1e3:>9.2f}{t_old / t_new:>9.1f}x{ratio:>14}  {agree} ({v_new:.6f})")


if __name__ == "__main__":
    main()
