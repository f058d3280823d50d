"""Time and peak memory of one clustering step, dense I-Con KL vs the structured fast path, side by side.

The step: cluster q on (N, C) head logits, p = debias(augmentation + knn over a global graph, 0.6),
KL, forward + backward. Both paths run on the same batch in one process; ratios are dense / fast.
CPU peak memory is the process's resident high-water mark above its level before the step (reset
through /proc/self/clear_refs, Linux only); CUDA peak memory is torch's allocator peak.

    python benchmarks/bench_fast_path.py                          # CPU (and CUDA when present), < 1 min
    python benchmarks/bench_fast_path.py --sizes 4096 16384 --clusters 1000 --device cuda
    python benchmarks/bench_fast_path.py --block-elements 262144    # smaller q blocks: memory O(N)
    python benchmarks/bench_fast_path.py --mmap-threshold-kib 64    # glibc serves blocks >= 64 KiB by mmap

By default glibc's own allocator settings are kept, as in training (a fixed low mmap threshold
makes resident memory follow live tensors more closely, at the price of page faults training never
pays: system time 4.2 s against 1.6 s once measured); the header says which was used.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import torch

from icon_bench.loss.objective import ICon


def make_batch(n: int, clusters: int, views: int, k: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """n rows = n // views samples x views; random head logits and a random global kNN graph."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    samples = max(1, n // views)
    index = torch.arange(samples).repeat_interleave(views)[:n]
    neighbors = torch.randint(0, samples, (n, k), generator=g)
    logits = torch.randn(n, clusters, generator=g)
    return {
        "embeddings": logits.to(device).requires_grad_(True),
        "index": index.to(device),
        "neighbors": neighbors.to(device),
    }


def make_loss(fast: bool, k: int, alpha: float) -> ICon:
    p = {"name": "mix", "kernels": ["augmentation", {"name": "knn", "k": k, "scope": "graph"}]}
    return ICon(p, "cluster", "kl", p_debias=alpha, fast=fast)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _mmap_threshold(kib: int) -> bool:
    """Make glibc serve blocks of at least `kib` KiB by mmap (freed at once); False off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, kib << 10))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure(step: Callable[[], None], device: torch.device, reps: int) -> tuple[float, float | None]:
    """Median seconds per step and peak extra memory (MiB) of one step."""
    step()  # warm up (allocator, first-call costs)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = None
        if _reset_cpu_peak():
            base = _status_kb("VmRSS")
            step()
            hwm = _status_kb("VmHWM")
            if base is not None and hwm is not None:
                peak = (hwm - base) / 1024
    return statistics.median(times), peak


def run(device: torch.device, sizes: list[int], args: argparse.Namespace) -> None:
    print(f"\n{device}: C={args.clusters}, views={args.views}, k={args.k}, alpha={args.alpha}, reps={args.reps}")
    print(f"{'N':>7} {'dense ms':>10} {'fast ms':>10} {'speedup':>8} {'dense MiB':>10} {'fast MiB':>9} {'mem ratio':>9} {'|diff|':>9}")
    for n in sizes:
        batch = make_batch(n, args.clusters, args.views, args.k, device)
        losses = {name: make_loss(name == "fast", args.k, args.alpha) for name in ("dense", "fast")}
        if args.block_elements:
            losses["fast"].block_elements = args.block_elements
        values = {name: float(loss(batch).detach()) for name, loss in losses.items()}
        results = {}
        for name, loss in losses.items():

            def step(loss: ICon = loss, batch: dict = batch) -> None:
                batch["embeddings"].grad = None
                loss(batch).backward()

            try:
                results[name] = measure(step, device, args.reps)
            except (RuntimeError, MemoryError) as exc:  # dense runs out of memory first at large N
                results[name] = (float("nan"), None)
                print(f"  {name} at N={n}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
        (td, md), (tf, mf) = results["dense"], results["fast"]

        def fmt(x: float | None, spec: str) -> str:
            return format(x, spec) if x is not None else "n/a"

        ratio = md / mf if md is not None and mf else None
        print(
            f"{n:>7} {td * 1e3:>10.1f} {tf * 1e3:>10.1f} {td / tf:>7.2f}x {fmt(md, '>10.1f'):>10} "
            f"{fmt(mf, '>9.1f'):>9} {fmt(ratio, '>8.2f') + ('x' if ratio else ''):>9} "
            f"{abs(values['dense'] - values['fast']):>9.1e}"
        )
        del batch, losses
        gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048], help="batch rows N")
    ap.add_argument("--clusters", type=int, default=100, help="cluster head size C")
    ap.add_argument("--views", type=int, default=2, help="views per sample (augmentation positives + 1)")
    ap.add_argument("--k", type=int, default=10, help="global kNN graph neighbours per row")
    ap.add_argument("--alpha", type=float, default=0.6, help="p debias")
    ap.add_argument("--reps", type=int, default=2, help="timed steps per path (median reported)")
    ap.add_argument("--block-elements", type=int, default=0, help="fast path q block size (0: ICon default)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CPU, then CUDA if present")
    ap.add_argument("--mmap-threshold-kib", type=int, default=0, help="fix glibc's mmap threshold (0: keep its defaults)")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: OpenMP spinning on a busy machine swamps the timings; 0: torch default)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "glibc defaults"
    if args.mmap_threshold_kib and _mmap_threshold(args.mmap_threshold_kib):
        allocator = f"glibc mmap threshold {args.mmap_threshold_kib} KiB"
    print(f"allocator: {allocator}")
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    for device in devices:
        run(device, args.sizes, args)


if __name__ == "__main__":
    main()
