"""Checks that need an accelerator: the conformance kit, the structured paths and a training epoch on CUDA.

Skipped without CUDA. `benchmarks/gpu_check.sh` runs this file on a GPU machine; with
ICON_BENCH_TEST_DEVICE=cpu it runs the same checks on the CPU (how the script is tried without one).
"""

from __future__ import annotations

import os

import pytest
import torch

import icon_bench as ib
from icon_bench import testing

DEVICE = os.environ.get("ICON_BENCH_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA (set ICON_BENCH_TEST_DEVICE=cpu to run on the CPU)"
)


@pytest.mark.parametrize("name", ["gaussian", "student_t", "cosine", "knn", "label", "augmentation", "cluster", "uniform"])
def test_builtin_kernels_pass_the_kit_on_the_device(name: str) -> None:
    testing.check_kernel(name, devices=[DEVICE])


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "tv", "hellinger", "chi2", "alpha"])
def test_builtin_divergences_pass_the_kit_on_the_device(name: str) -> None:
    testing.check_divergence(name, devices=[DEVICE])


def _batch(n: int, c: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embeddings": (3 * torch.randn(n, c, generator=g)).to(DEVICE).requires_grad_(True),
        "index": (torch.arange(n) // 4).to(DEVICE),
        "neighbors": torch.randint(0, n // 4, (n, 10), generator=g).to(DEVICE),
        "inputs": torch.zeros(n, 1, device=DEVICE),
    }


@pytest.mark.parametrize("div,p_debias", [("kl", 0.6), ("tv", 0.0), ("js", 0.0), ("hellinger", 0.6)])
def test_structured_equals_dense_on_the_device(div: str, p_debias: float) -> None:
    batch = _batch(512, 50)
    p = {"name": "mix", "kernels": ["augmentation", {"name": "knn", "k": 10, "scope": "graph"}]}
    dense = ib.ICon(p, "cluster", div, p_debias=p_debias, q_debias=0.6, fast=False)
    fast = ib.ICon(p, "cluster", div, p_debias=p_debias, q_debias=0.6, fast=True)
    fast.matmul_dtype = None  # float32 products: equal to the dense path
    v_d, v_f = dense(batch), fast(batch)
    torch.testing.assert_close(v_f, v_d, rtol=1e-4, atol=1e-5)
    g_d, = torch.autograd.grad(v_d, batch["embeddings"])
    g_f, = torch.autograd.grad(v_f, batch["embeddings"])
    torch.testing.assert_close(g_f, g_d, rtol=1e-3, atol=1e-6)


def test_bf16_products_stay_close_on_the_device() -> None:
    batch = _batch(1024, 100)
    p = {"name": "mix", "kernels": ["augmentation", {"name": "knn", "k": 10, "scope": "graph"}]}
    exact = ib.ICon(p, "cluster", "kl", p_debias=0.6, q_debias=0.6)
    exact.matmul_dtype = None
    bf16 = ib.ICon(p, "cluster", "kl", p_debias=0.6, q_debias=0.6)
    bf16.matmul_dtype = torch.bfloat16
    torch.testing.assert_close(bf16(batch), exact(batch), rtol=1e-2, atol=1e-2)


def test_a_clustering_trial_trains_on_the_device() -> None:
    data = testing.make_data()
    out = ib.method("pmi").run(data, seed=0, device=DEVICE, overrides={"settings": {"epochs": 2, "heads": 2}})
    assert out.test_clusters is not None and out.history["loss"][-1] < out.history["loss"][0] * 1.5


@pytest.mark.skipif(DEVICE != "cuda", reason="sync debug mode is a CUDA feature")
@pytest.mark.parametrize("recipe", ["pmi", "supcon"])
def test_training_steps_do_not_sync_with_the_host(recipe: str) -> None:
    """torch.cuda.set_sync_debug_mode("error") around the trainer's steps: batch, forward, loss, backward, Adam."""
    from icon_bench.train.heads import MultiHead
    from icon_bench.train.trainer import TrainData, TrainSettings, make_batch

    g = torch.Generator().manual_seed(0)
    n = 4096
    data = TrainData(torch.randn(n, 32, generator=g), torch.arange(n) % 10, torch.randint(0, n, (n, 10), generator=g)).to(DEVICE)
    if recipe == "pmi":
        settings, width = TrainSettings(neighbors=2), 100
        loss = MultiHead(ib.ICon({"name": "knn", "k": 10, "scope": "graph"}, "cluster", "tv", p_debias=0.2), 10)
    else:
        settings, width = TrainSettings(views=2), 16
        loss = ib.ICon("label", {"name": "cosine", "temperature": 0.2}, "js")
    model = torch.nn.Linear(32, width).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    index_gen, device_gen = torch.Generator().manual_seed(1), torch.Generator(device=DEVICE).manual_seed(1)
    perm = torch.randperm(n, generator=index_gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for anchors in perm[:1024].split(256):
            batch = make_batch(data, anchors, settings, index_gen, None, device_gen)
            batch["embeddings"] = model(batch["inputs"]).float()
            value = loss(batch)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(value).item()


def test_uint8_pixels_convert_on_the_device_as_on_the_cpu() -> None:
    """The trainer converts image batches on the device (a table there): the same float32 values as the CPU's."""
    from icon_bench.data.pixels import Pixels

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    x[0, 0, 0, :] = torch.tensor([0, 1, 2, 127, 128, 253, 254, 255], dtype=torch.uint8)
    mean, std = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g) + 0.1
    for pixels in (Pixels(), Pixels(mean=mean, std=std)):
        assert torch.equal(pixels.to(DEVICE)(x.to(DEVICE)).cpu(), pixels(x))
