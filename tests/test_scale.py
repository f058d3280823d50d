"""The paths made for ImageNet-sized features equal their references on small data.

Entry dot products (the cluster kernel's q at p's support) against a padded gather, the structured
loss on rows of very uneven support width against the dense loss, sparse propagation against the
dense walk, the head chosen before embedding, the approximate graph's recall (and the exact
fallback without faiss), and loading without copies.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import icon_bench as ib
from icon_bench.data import ann, files, graph as graph_mod
from icon_bench.data.graph import ANN_KEY, clear_graph_cache, global_knn, graph_key, graph_record, knn_graph
from icon_bench.data.load import load_dataset
from icon_bench.loss.entries import entry_dots
from icon_bench.loss.transforms import Propagate


def _uneven_cols(n: int, seed: int = 0) -> torch.Tensor:
    """(n, n) columns, -1 padded: row 0 lists every column, some rows none, the rest one to three."""
    g = torch.Generator().manual_seed(seed)
    cols = torch.full((n, n), -1, dtype=torch.long)
    cols[0] = torch.arange(n)
    for i in range(3, n):
        width = int(torch.randint(1, 4, (1,), generator=g))
        cols[i, :width] = torch.randperm(n, generator=g)[:width]
    return cols  # rows 1 and 2 have no support


@pytest.mark.parametrize("heads", [None, 3])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])
def test_entry_dots_equal_a_padded_gather_in_value_and_gradient(heads, chunk) -> None:
    n, c = 12, 5
    shape = (n, c) if heads is None else (heads, n, c)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    cols = _uneven_cols(n)
    valid = cols >= 0
    ref = torch.where(valid, torch.einsum("...nc,...nkc->...nk", a, b[..., cols.clamp(min=0), :]), 0.0)
    got = entry_dots(a, b, cols, chunk_elements=chunk)
    torch.testing.assert_close(got, ref)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ga, gb = torch.autograd.grad((ref * w).sum(), (a, b))
    fa, fb = torch.autograd.grad((got * w).sum(), (a, b))
    torch.testing.assert_close(fa, ga)
    torch.testing.assert_close(fb, gb)
    if chunk == 7 and heads is None:  # numerical gradients too (slow: once)
        small = _uneven_cols(6)
        x, y = (t[:6].detach().requires_grad_(True) for t in (a, b))
        assert torch.autograd.gradcheck(lambda x, y: entry_dots(x, y, small, chunk), (x, y))


def _graph_batch(n: int = 16, k: int = 4, seed: int = 3) -> dict[str, torch.Tensor]:
    """A pmi-like batch whose graph rows hit the batch very unevenly (one row lists most of it)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.arange(n)
    neighbors = torch.randint(n, 10 * n, (n, k), generator=g)  # mostly outside the batch: no support
    neighbors[0] = torch.arange(1, k + 1)
    neighbors[1, :2] = torch.tensor([0, 2])
    neighbors[5, :1] = torch.tensor([6])
    return {
        "embeddings": torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True),
        "index": index,
        "neighbors": neighbors,
        "inputs": torch.zeros(n, 1, dtype=torch.float64),
    }


@pytest.mark.parametrize("div", ["kl", "js", "tv"])
@pytest.mark.parametrize("transform", [{}, {"p_propagate": 3}, {"p_debias": 0.3}])
def test_structured_cluster_loss_on_uneven_rows_equals_dense(div, transform) -> None:
    batch = _graph_batch()
    p = ("knn", {"k": 4, "scope": "graph"})
    dense = ib.ICon(p, "cluster", div, fast=False, **transform)
    fast = ib.ICon(p, "cluster", div, fast=True, **transform)
    v_d, v_f = dense(batch), fast(batch)
    torch.testing.assert_close(v_f, v_d, rtol=1e-6, atol=1e-8)
    (g_d,) = torch.autograd.grad(v_d, batch["embeddings"])
    (g_f,) = torch.autograd.grad(v_f, batch["embeddings"])
    assert g_d.abs().max() > 1e-6
    torch.testing.assert_close(g_f, g_d, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_sparse_propagation_equals_the_dense_walk(steps) -> None:
    batch = _graph_batch(n=20)
    kernel = Propagate(("knn", {"k": 4, "scope": "graph"}), steps=steps)
    sp = kernel.sparse(batch)
    widths = (sp.cols >= 0).sum(1)
    assert widths.max() > widths.min()  # the uneven case
    dense = kernel(batch)
    # An independent reference: the walk as powers of the row-normalised adjacency in float64.
    adj = torch.zeros(20, 20, dtype=torch.float64)
    for i, row in enumerate(batch["neighbors"]):
        for j in row.tolist():
            if j < 20 and j != i:
                adj[i, j] = 1.0
    p = adj / adj.sum(1, keepdim=True).clamp_min(1)
    total, power = p.clone(), p.clone()
    for _ in range(steps - 1):
        power = power @ p
        total += power
    total.fill_diagonal_(0)
    ref = total / total.sum(1, keepdim=True).clamp_min(1e-300)
    torch.testing.assert_close(sp.dense().exp(), ref.to(sp.log_w.dtype), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dense.exp(), ref.to(dense.dtype), rtol=1e-6, atol=1e-9)


def test_the_head_is_chosen_before_embedding_and_only_it_embeds(tmp_path, monkeypatch) -> None:
    from icon_bench.train.heads import MultiHead, OneHead
    from icon_bench.train.learn import run
    from icon_bench.train.recipes import get_recipe
    from icon_bench.train.trainer import embed

    data = load_dataset({"name": "digits", "subset": 150})
    monkeypatch.setenv("ICON_BENCH_CACHE", str(tmp_path))  # its graph stays out of the session's cache
    try:
        out = run(get_recipe("pmi"), data, seed=0, overrides={"settings": {"epochs": 1, "heads": 3, "batch_size": 128}})
    finally:
        clear_graph_cache()  # tests that count graph computations expect a fresh cache
    losses = out.info["head_losses"]
    assert out.info["selected_head"] == int(np.argmin(losses))
    assert out.train_embeddings.shape[1] == data.num_classes  # one head's clusters, not three heads'
    # The one head's embedding equals the slice of every head's (the old path), on a fixed model.
    model = torch.nn.Linear(data.x_train.shape[1], 3 * data.num_classes)
    heads = MultiHead(torch.nn.Identity(), 3)
    idx = torch.arange(len(data.x_train))
    full = embed(model, data.x_train, idx, batch_size=37)
    one = embed(OneHead(model, heads, 2), data.x_train, idx, batch_size=37)
    assert torch.equal(one, heads.head(full, 2))


def test_approximate_graph_recall_is_measured_and_recorded(tmp_path) -> None:
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 32, generator=g) * 3
    x = centres[torch.randint(0, 20, (3000,), generator=g)] + torch.randn(3000, 32, generator=g)
    exact = knn_graph(x, 10, "euclidean")
    approx, record = ann.approximate_knn(x, 10, "euclidean", recall=0.95)
    assert approx.shape == exact.shape and approx.dtype == torch.int64
    assert (approx != torch.arange(3000)[:, None]).all()  # never the row itself
    measured = ann.recall_at_k(approx, exact)
    assert record["recall@10"] >= 0.95 and measured >= 0.9
    assert abs(record["recall@10"] - measured) < 0.05  # the sample's recall stands for the whole graph
    clear_graph_cache()
    # A graph the earlier index (HNSW) cached under the bare "-ann" key is not read back as IVF's.
    (tmp_path / "knn").mkdir()
    np.save(tmp_path / "knn" / f"{graph_key([x], 10, 'euclidean')}-ann.npy", np.zeros((3000, 10), dtype=np.int64))
    graph, source, key = global_knn([x], 10, "euclidean", cache_dir=tmp_path, approximate=True)
    assert key.endswith(ANN_KEY) and source == "computed" and (graph != 0).any()
    assert graph_record(key, tmp_path)["method"] == "faiss-ivf-flat"
    clear_graph_cache()
    assert graph_record(key, tmp_path)["recall@10"] == record["recall@10"]  # read back from the cache


def test_the_lists_scanned_grow_until_the_recall_is_reached() -> None:
    pytest.importorskip("faiss")
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))  # no clusters: one list is not enough
    exact = knn_graph(x, 10, "euclidean")
    approx, record = ann.approximate_knn(x, 10, "euclidean", recall=0.99)
    assert record["nlist"] == ann.lists_for(2000) == 44 and record["nprobe"] > 1
    assert record["recall@10"] >= 0.99 and ann.recall_at_k(approx, exact) >= 0.97
    # At every list the search is exhaustive: exact but for ties.
    _, full = ann.approximate_knn(x, 10, "euclidean", recall=1.01)
    assert full["nprobe"] == full["nlist"] and full["recall@10"] == 1.0


def test_without_faiss_the_graph_is_exact_with_a_notice(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ann, "available", lambda: False)
    monkeypatch.setattr(graph_mod, "APPROX_ROWS", 50)
    clear_graph_cache()
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match=r"the approximate one needs faiss-cpu: pip install 'icon-bench\[ann\]'"):
        graph, _, key = global_knn([x], 5, "cosine", cache_dir=tmp_path)
    assert not key.endswith("-ann") and graph_record(key)["method"] == "exact"
    assert torch.equal(graph, knn_graph(x, 5, "cosine"))
    clear_graph_cache()


def test_knn_graph_chunks_never_shrink_below_the_floor() -> None:
    assert graph_mod.chunk_rows(1_281_167, 1_281_280, torch.device("cpu")) == graph_mod.MIN_CHUNK_ROWS
    assert graph_mod.chunk_rows(1000, 1000, torch.device("cpu")) == 1000


def test_a_big_npy_is_memory_mapped_and_float32_is_not_copied(tmp_path, monkeypatch) -> None:
    g = np.random.default_rng(0)
    x = g.standard_normal((60, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_labels.npy", np.arange(60) % 3)
    monkeypatch.setattr(files, "MMAP_BYTES", 0)
    assert isinstance(files._load_npy(tmp_path / "x.npy"), np.memmap)
    from icon_bench.data.splits import _features

    assert _features(x, "here") is x  # float32 is used as it is
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        data = load_dataset({"name": "arrays", "path": str(tmp_path / "x.npy"), "val_fraction": 0.0, "standardize": True})
    # Standardized in chunks equals the float64 reference on the train rows.
    train = load_dataset({"name": "arrays", "path": str(tmp_path / "x.npy"), "val_fraction": 0.0})
    ref = train.x_train.double()
    ref = ((ref - ref.mean(0)) / ref.std(0, unbiased=False)).float()
    torch.testing.assert_close(data.x_train, ref, rtol=1e-5, atol=1e-5)
    assert len(data.x_val) == 0


def test_nan_in_features_is_reported_by_row() -> None:
    from icon_bench.data.splits import _features
    from icon_bench.errors import DataError

    x = np.zeros((10, 3), dtype=np.float32)
    x[7, 1] = np.nan
    x[8, 2] = np.inf
    with pytest.raises(DataError, match=r"2 NaN/inf values \(first in row 7\)"):
        _features(x, "f.npy")


def test_pca_in_chunks_equals_the_float64_reference(monkeypatch) -> None:
    from icon_bench.data import load as load_mod

    monkeypatch.setattr(load_mod, "rows_per_chunk", lambda x: 100)  # several chunks on digits
    raw = load_dataset({"name": "digits", "val_fraction": 0.1})
    got = load_dataset({"name": "digits", "val_fraction": 0.1, "pca": 5})
    x = raw.x_train.double()
    mean = x.mean(0)
    evals, evecs = torch.linalg.eigh((x - mean).T @ (x - mean) / (len(x) - 1))
    comps = evecs[:, torch.argsort(evals, descending=True)[:5]]
    comps = comps * torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    for split in ("train", "val", "test"):
        ref = ((getattr(raw, f"x_{split}").double() - mean) @ comps).float()
        torch.testing.assert_close(getattr(got, f"x_{split}"), ref, rtol=1e-5, atol=1e-4)
