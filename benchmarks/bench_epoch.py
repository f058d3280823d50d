"""One epoch (or more) of I-Con's clustering recipe over synthetic frozen embeddings, timed by phase.

ImageNet-1K with a frozen DINO backbone, at its size: `--rows` embeddings (1,281,167 for ImageNet;
default 1.28 M) of `--dim` (768) drawn from `--classes` Gaussian clusters, a linear head to as many
clusters, debiased_infonce_clustering's p and q (alpha 0.2), 4,096 rows per step (anchors and their
2 drawn graph neighbours), 1 head. Prints the kNN
graph time, the training loop's time per epoch and the whole trial's, and the test Hungarian
accuracy as a sanity check (the clusters are separable, so learning shows).

    python benchmarks/bench_epoch.py --device cuda                          # the full size, on a GPU
    python benchmarks/bench_epoch.py --device cpu --rows 20000 --dim 64 --classes 20   # minutes on a CPU
"""

from __future__ import annotations

import argparse
import time

import torch

import icon_bench as ib
from icon_bench.data.splits import DataSplits
from icon_bench.evaluation.metrics import hungarian_accuracy


def synthetic(rows: int, dim: int, classes: int, seed: int = 0) -> DataSplits:
    """Separable Gaussian clusters on the unit sphere's scale, split 95 / 5 into train and test."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (rows,), generator=g)
    x = centres[y] + 0.5 * torch.randn(rows, dim, generator=g)
    n_test = max(classes, rows // 20)
    return DataSplits(
        x_train=x[n_test:], y_train=y[n_test:], x_test=x[:n_test], y_test=y[:n_test],
        num_classes=classes, name="synthetic", meta={"source": "bench_epoch", "seed": seed},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_280_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-rows", type=int, default=4096, help="rows per step: anchors x (1 + drawn neighbours)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = synthetic(args.rows, args.dim, args.classes)
    made = time.perf_counter() - t0
    method = ib.method("debiased_infonce_clustering")
    anchors = max(1, args.batch_rows // (1 + int(method.settings.get("neighbors", 0))))
    overrides = {
        "model": {"name": "linear", "out_dim": args.classes},
        "settings": {"epochs": args.epochs, "batch_size": anchors, "heads": 1, "lr_step": 0},
    }
    start = time.perf_counter()
    cpu0 = time.process_time()
    out = method.run(data, seed=0, device=args.device, overrides=overrides)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    loop = float(out.info.get("train_loop_s", float("nan")))
    acc = hungarian_accuracy(data.y_test, out.test_clusters)
    print(
        f"{args.rows} x {args.dim} embeddings, {args.classes} clusters, {anchors} anchors per step, {args.epochs} epoch(s), "
        f"{args.device}: data {made:.1f} s; trial {wall:.1f} s wall ({cpu:.1f} CPU s); training loop "
        f"{loop:.1f} s = {loop / args.epochs:.2f} s per epoch ({args.rows / max(loop / args.epochs, 1e-9):,.0f} rows/s); "
        f"graph, embedding and head choice {wall - loop:.1f} s; test Hungarian accuracy {acc:.3f}"
    )


if __name__ == "__main__":
    main()
