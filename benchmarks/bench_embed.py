"""Embed throughput: a randomly initialised ViT-B/14 at 224 px (bf16 autocast on CUDA), model alone and the whole
`icon-bench embed` path (uint8 images -> resize/crop/normalise in loading threads -> model -> shards -> cache).

    python benchmarks/bench_embed.py --device cuda                          # ViT-B/14, 224 px
    python benchmarks/bench_embed.py --device cpu --dim 64 --depth 1 --images 64 --batch 16   # a CPU try-out

Prints images/s for each; the model alone is the ceiling, the pipeline says what loading costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ViT(nn.Module):
    """A ViT shaped like DINOv2's ViT-B/14 (patch 14, CLS token, pre-norm blocks), random weights."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, patch: int = 14, image: int = 224) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (image // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
        return self.norm(self.blocks(t))[:, 0]


def model_only(model: nn.Module, device: torch.device, batch: int, reps: int) -> float:
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model(x)  # warm-up (kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - t0)


def pipeline(model: nn.Module, args: argparse.Namespace) -> tuple[float, int]:
    from icon_bench.features.backbones import Backbone
    from icon_bench.features.embed import embed_dataset
    from icon_bench.features.preprocess import ImagePreprocess

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npz"
        n = args.images
        np.savez(path, x_train=rng.integers(0, 256, (n, 3, 256, 256), dtype=np.uint8), y_train=np.arange(n) % 10,
                 x_test=rng.integers(0, 256, (8, 3, 256, 256), dtype=np.uint8), y_test=np.arange(8) % 10)
        backbone = Backbone("bench", "vit-random", lambda: model, ImagePreprocess(256, 224), tag="vit-random")
        t0 = time.perf_counter()
        embed_dataset({"name": "arrays", "path": str(path), "flatten": False}, backbone, Path(tmp) / "cache",
                      device=args.device, batch_size=args.batch, workers=args.workers, knn=0, progress=False)
        return (n + 8) / (time.perf_counter() - t0), n + 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--images", type=int, default=4096, help="images through the whole embed path")
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ViT(args.dim, args.depth, max(1, args.dim // 64)).to(device).eval()
    name = f"ViT(dim {args.dim}, depth {args.depth}, patch 14) at 224 px on {device}" + (" bf16" if device.type == "cuda" else " fp32")
    print(f"embed throughput, {name}")
    print(f"  model alone (batch {args.batch}, {args.reps} reps): {model_only(model, device, args.batch, args.reps):,.0f} images/s")
    rate, n = pipeline(model, args)
    print(f"  icon-bench embed ({n} uint8 256x256 images, {args.workers} loading threads, batch {args.batch}, "
          f"load + preprocess + model + shards + cache): {rate:,.0f} images/s")


if __name__ == "__main__":
    main()
