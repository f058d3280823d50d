"""I-Con's clustering step, three ways side by side: the paper's formula written densely here,
icon-bench's dense path (fast=False) and its structured path. Same batch, same head, same Adam step.

The step (I-Con's ImageNet recipe, scaled by the arguments): frozen D-dim embeddings of `rows / views`
images x `views` views, a linear head to C clusters (`--heads` heads of C each), p =
debias(0.5 augmentation + 0.5 kNN over a global graph, alpha), q = debias(cluster kernel, alpha),
KL, forward, backward and one Adam step. Reports median ms per step, rows per second and peak
memory above the level before the step (CPU: resident high-water mark; CUDA: allocator peak),
with ratios against the paper's formula, and checks that the three losses agree.

    python benchmarks/bench_icon_step.py                                   # 4,096 rows, CPU, 1 thread
    python benchmarks/bench_icon_step.py --rows 4096 16384 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import torch
from bench_fast_path import _reset_cpu_peak, _status_kb  # the same /proc readings

from icon_bench.loss.objective import ICon
from icon_bench.train.heads import MultiHead


def make_batch(rows: int, dim: int, views: int, k: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    samples = max(1, rows // views)
    index = torch.arange(samples).repeat_interleave(views)[:rows]
    return {
        "inputs": torch.randn(rows, dim, generator=g).to(device),
        "index": index.to(device),
        "neighbors": torch.randint(0, samples, (rows, k), generator=g).to(device),
    }


def paper_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], alpha: float, k: int) -> torch.Tensor:
    """The published formula, dense: every matrix N x N, as the reference implementation computes it."""
    n = logits.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=logits.device)
    idx = batch["index"]
    aug = (idx[:, None] == idx[None, :]) & off
    knn = (batch["neighbors"][:, :k, None] == idx[None, None, :]).any(1) & off
    p = 0.5 * aug / aug.sum(1, keepdim=True).clamp_min(1) + 0.5 * knn / knn.sum(1, keepdim=True).clamp_min(1)
    p = p / p.sum(1, keepdim=True)
    p = (1 - alpha) * p + alpha * off / (n - 1)
    phi = torch.softmax(logits.float(), 1)
    q = (phi / phi.sum(0)) @ phi.T
    q = q.clamp_min(torch.finfo(q.dtype).eps ** 2) * off
    q = q / q.sum(1, keepdim=True)
    q = (1 - alpha) * q + alpha * off / (n - 1)
    q = torch.where(off, q, 1.0)  # p is 0 on the diagonal: log q there must stay finite (its gradient, 0 / 0)
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(1).mean()


def icon_loss(alpha: float, k: int, fast: bool) -> ICon:
    p = {"name": "mix", "kernels": ["augmentation", {"name": "knn", "k": k, "scope": "graph"}], "weights": [0.5, 0.5]}
    return ICon(p, "cluster", "kl", p_debias=alpha, q_debias=alpha, fast=fast)


def measure(step: Callable[[], float], device: torch.device, reps: int) -> tuple[float, float | None, float]:
    """(median seconds per step, peak MiB above the start of a step, last loss value)."""
    value = step()  # warm-up: allocator, first-call costs
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter() if device.type == "cuda" else time.process_time()
        value = step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() if device.type == "cuda" else time.process_time()) - t0)
    gc.collect()
    peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        if _reset_cpu_peak():
            base = _status_kb("VmRSS")
            step()
            hwm = _status_kb("VmHWM")
            peak = (hwm - base) / 1024 if base is not None and hwm is not None else None
    return statistics.median(times), peak, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[4096])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast for the head's matmul (CUDA)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paths", nargs="+", default=["paper", "dense", "structured"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"I-Con clustering step on {device} ({args.threads} thread(s), {args.dtype}): D={args.dim}, C={args.clusters}, "
        f"heads={args.heads}, views={args.views}, k={args.k}, alpha={args.alpha}, median of {args.reps}"
    )
    print(f"{'rows':>7} {'path':<11}{'ms/step':>10}{'rows/s':>10}{'peak MiB':>10}{'time x':>8}{'mem x':>7}  loss")
    for rows in args.rows:
        batch = make_batch(rows, args.dim, args.views, args.k, device)
        results: dict[str, tuple[float, float | None, float]] = {}
        for path in args.paths:
            torch.manual_seed(0)
            head = torch.nn.Linear(args.dim, args.clusters * args.heads).to(device)
            opt = torch.optim.Adam(head.parameters(), lr=1e-3)
            loss_fn = None if path == "paper" else MultiHead(icon_loss(args.alpha, args.k, path == "structured"), args.heads)

            def step() -> float:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
                    logits = head(batch["inputs"])
                logits = logits.float()
                if loss_fn is None:
                    w = args.clusters
                    loss = sum(paper_loss(logits[:, h * w : (h + 1) * w], batch, args.alpha, args.k) for h in range(args.heads))
                else:
                    loss = loss_fn({**batch, "embeddings": logits})
                loss.backward()
                opt.step()
                return float(loss.detach())

            try:
                results[path] = measure(step, device, args.reps)
            except (RuntimeError, MemoryError) as exc:  # the dense paths run out of memory first
                print(f"{rows:>7} {path:<11}{type(exc).__name__}: {str(exc).splitlines()[0][:60]}")
        ref = results.get("paper")
        for path, (t, mem, value) in results.items():
            tx = f"{ref[0] / t:.2f}" if ref else "-"
            mx = f"{ref[1] / mem:.2f}" if ref and ref[1] and mem else "-"
            print(f"{rows:>7} {path:<11}{t * 1e3:>10.1f}{rows / t:>10.0f}{(mem or float('nan')):>10.1f}{tx:>8}{mx:>7}  {value:.6f}")
        values = [v for _, _, v in results.values()]
        if values:
            spread = max(values) - min(values)
            print(f"{rows:>7} losses agree within {spread:.1e} (first step's Adam update makes later values differ by rounding)")
        del batch
        gc.collect()


if __name__ == "__main__":
    main()
