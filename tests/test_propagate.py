"""Propagation on the global kNN graph: the sparse matrix power against the dense walk, the knn
kernel reading its weights, neighbours drawn by them, the recipes using it, and its memory at 200k rows."""

from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest
import torch

import icon_bench as ib
from icon_bench.data.graph import knn_graph
from icon_bench.data.load import load_dataset
from icon_bench.data.propagate import propagate_graph
from icon_bench.loss.graphs import KNN
from icon_bench.loss.transforms import Propagate
from icon_bench.train import build
from icon_bench.train.recipes import get_recipe
from icon_bench.train.trainer import TrainData, TrainSettings, make_batch


def _graph(n: int = 50, k: int = 4, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return knn_graph(x, k, "euclidean")


def _dense_walks(knn: np.ndarray, steps: int) -> np.ndarray:
    """P + ... + P^steps by dense float64 products, self dropped, rows normalised (the reference)."""
    n = knn.shape[0]
    adj = np.zeros((n, n))
    for i, row in enumerate(knn):
        for j in row:
            if j >= 0 and j != i:
                adj[i, j] = 1.0
    p = adj / np.maximum(adj.sum(1, keepdims=True), 1)
    power, total = p, p.copy()
    for _ in range(steps - 1):
        power = power @ p
        total += power
    np.fill_diagonal(total, 0.0)
    return total / total.sum(1, keepdims=True)


def _as_dense(cols: torch.Tensor, w: torch.Tensor, n: int) -> np.ndarray:
    out = np.zeros((cols.shape[0], n))
    for i in range(cols.shape[0]):
        for c, v in zip(cols[i].tolist(), w[i].tolist()):
            if c >= 0:
                assert out[i, c] == 0.0, "a column listed twice"
                out[i, c] = v
    return out


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_without_a_cut_the_sparse_power_is_the_dense_walk(steps) -> None:
    knn = _graph()
    knn[3, 1] = knn[3, 0]  # a repeated neighbour counts once
    knn[5, 2] = 5  # the row itself does not count
    knn[7, 3] = -1  # nor padding
    cols, w, record = propagate_graph(knn, steps, keep=10_000)
    assert record["rows_cut"] == 0 and record["kept_mass_min"] == 1.0
    ref = _dense_walks(knn.numpy(), steps)
    got = _as_dense(cols, w, len(knn))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert ((got > 0) == (ref > 0)).all()  # the same support, nothing dropped or added
    assert cols.shape[1] == int((ref > 0).sum(1).max())  # no wider than the fullest row


def test_a_cut_keeps_each_rows_heaviest_entries_and_says_how_much_mass() -> None:
    knn = _graph(n=40, k=5, seed=1)
    keep = 7
    cols, w, record = propagate_graph(knn, 2, keep=keep)
    ref = _dense_walks(knn.numpy(), 2)
    masses = []
    for i in range(len(knn)):
        order = sorted(range(len(knn)), key=lambda j: (-ref[i, j], j))  # heaviest, lower index on ties
        top = [j for j in order[:keep] if ref[i, j] > 0]
        assert cols[i][cols[i] >= 0].tolist() == top
        np.testing.assert_allclose(w[i, : len(top)].numpy(), ref[i, top] / ref[i, top].sum(), rtol=1e-6)
        masses.append(ref[i, top].sum())
    assert record["rows_cut"] == sum(m < 1 - 1e-9 for m in masses) > 0
    assert record["kept_mass_min"] == pytest.approx(min(masses), abs=1e-6)
    assert record["kept_mass_mean"] == pytest.approx(float(np.mean(masses)), abs=1e-6)


@pytest.mark.parametrize("steps", [2, 3])
def test_the_kernel_on_a_batch_of_every_row_equals_the_in_batch_walk(steps) -> None:
    knn = _graph(n=30, k=3, seed=2)
    cols, w, _ = propagate_graph(knn, steps, keep=10_000)
    n = len(knn)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # batch order is not index order
    walked = {"inputs": torch.zeros(n, 2), "index": perm, "neighbors": knn[perm]}
    ref = Propagate(KNN(k=3, scope="graph"), steps=steps)(walked, "inputs")
    batch = {"inputs": torch.zeros(n, 2), "index": perm, "neighbors": cols[perm], "neighbor_weights": w[perm]}
    kernel = KNN(k=3, scope="graph")
    torch.testing.assert_close(kernel.sparse(batch, "inputs").dense().exp(), ref.exp(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(kernel(batch, "inputs").exp(), ref.exp(), atol=1e-6, rtol=1e-5)


def test_weighted_sparse_rows_equal_the_dense_form_with_repeated_indices() -> None:
    knn = _graph(n=60, k=5, seed=3)
    cols, w, _ = propagate_graph(knn, 2)
    data = TrainData(torch.randn(60, 4), torch.arange(60) % 3, cols, knn_weights=w)
    g = torch.Generator().manual_seed(4)
    batch = make_batch(data, torch.randint(0, 60, (20,), generator=g), TrainSettings(neighbors=3, views=2), g)
    assert len(set(batch["index"].tolist())) < len(batch["index"])  # views and draws repeat indices
    kernel = KNN(k=5, scope="graph")
    sparse = kernel.sparse(batch, "inputs")
    assert not sparse.has_uniform
    torch.testing.assert_close(sparse.dense(), kernel(batch, "inputs"))
    loss = ib.ICon(kernel, "cluster")
    assert loss.uses_fast_path
    batch["embeddings"] = torch.randn(len(batch["index"]), 6, generator=g)
    fast, dense = loss(batch), ib.ICon(kernel, "cluster", fast=False)(batch)
    torch.testing.assert_close(fast, dense)


def test_neighbours_are_drawn_by_the_walks_weights() -> None:
    n = 8
    cols = torch.tensor([[1, 2, 3, -1]] * n)
    w = torch.tensor([[0.6, 0.3, 0.1, 0.0]] * n)
    data = TrainData(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long), cols, knn_weights=w)
    g = torch.Generator().manual_seed(0)
    batch = make_batch(data, torch.zeros(20_000, dtype=torch.long), TrainSettings(neighbors=1), g)
    drawn = batch["index"][20_000:]
    counts = torch.bincount(drawn, minlength=n).double() / len(drawn)
    torch.testing.assert_close(counts[:4], torch.tensor([0.0, 0.6, 0.3, 0.1], dtype=torch.float64), atol=0.015, rtol=0)
    assert torch.equal(batch["neighbor_weights"], w[batch["index"]])


def test_recipes_walk_the_global_graph_and_others_the_batch() -> None:
    pmi = get_recipe("pmi").with_overrides({"p": {"propagate": 2}})
    assert build.propagates_graph(pmi)
    assert not build.propagates_graph(get_recipe("pmi"))
    data = load_dataset("digits")
    loss = pmi.build_loss(data)
    assert not any(isinstance(m, Propagate) for m in loss.modules())  # the weights hold the walks
    batch_knn = get_recipe("pmi").with_overrides({"p": {"name": "knn", "k": 5, "scope": "batch", "propagate": 2}})
    assert not build.propagates_graph(batch_knn)
    assert any(isinstance(m, Propagate) for m in batch_knn.build_loss(data).modules())
    knn = _graph(n=len(data.x_train), k=10, seed=5)
    cols, w, record = build.propagated(pmi.with_overrides({"settings": {"propagate_keep": 25}}), data, knn)
    assert record["k"] == 10 and record["steps"] == 2 and record["keep"] == 25
    assert cols.shape == w.shape and cols.shape[1] <= 25
    torch.testing.assert_close(w.sum(1), torch.ones(len(cols)))


def test_two_hundred_thousand_rows_stay_sparse() -> None:
    n, k = 200_000, 10
    knn = torch.randint(0, n, (n, k), generator=torch.Generator().manual_seed(0))  # little overlap: the widest rows
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        cols, w, record = propagate_graph(knn, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cols.shape == (n, 40) and record["keep"] == 40  # 2 x k x steps
    result = cols.numel() * 8 + w.numel() * 4  # 96 MB
    # O(n k^2): the result plus a chunk's expansion, against 320 GB for one dense n x n float64.
    assert peak < 3 * result, f"peak {peak / 2**20:.0f} MB for a {result / 2**20:.0f} MB result"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024 < 1 << 30
    assert 0.6 < record["kept_mass_mean"] < 0.7  # P's 10 entries (half the mass) + 30 of P^2's ~100
