"""Small inputs for the checks: a random batch (`make_batch`) and tiny Gaussian blobs (`make_data`)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["make_batch", "make_data"]


# ---------------------------------------------------------------------------------------------
# tiny inputs
# ---------------------------------------------------------------------------------------------
def make_batch(
    n: int = 12,
    *,
    dim: int = 4,
    input_dim: int = 4,
    num_classes: int = 3,
    views: int = 2,
    k: int = 2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A random batch with every contract key: embeddings, inputs, labels, index (`views` per sample), neighbors.

    Rows i and i + n/views are views of one sample (same index and label); each sample's `k` graph
    neighbours are the next `k` samples, all present in the batch, so every built-in p has support.
    """
    if n % views:
        raise ValueError(f"n={n} must be a multiple of views={views}")
    samples = n // views
    if not 0 < k < samples:
        raise ValueError(f"k={k} must be in [1, {samples - 1}] for {samples} samples")
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(samples).repeat(views)
    labels = index % num_classes
    neighbors = (index[:, None] + torch.arange(1, k + 1)[None, :]) % samples
    batch = {
        "embeddings": torch.randn(n, dim, generator=gen),
        "inputs": torch.randn(n, input_dim, generator=gen),
        "labels": labels.long(),
        "index": index.long(),
        "neighbors": neighbors.long(),
    }
    return {
        key: (t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)) for key, t in batch.items()
    }


def make_data(
    n_train: int = 64,
    n_test: int = 32,
    *,
    dim: int = 8,
    num_classes: int = 3,
    seed: int = 0,
) -> Any:
    """Tiny, well-separated Gaussian blobs as ``icon_bench.data.DataSplits`` (the method check's input)."""
    from icon_bench.data.splits import DataSplits

    gen = torch.Generator().manual_seed(seed)
    centers = 4.0 * torch.randn(num_classes, dim, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        x = centers[y] + torch.randn(n, dim, generator=gen)
        return x.float(), y.long()

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return DataSplits(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        name="conformance_blobs",
        meta={"source": "icon_bench.testing.make_data", "seed": seed},
    )
