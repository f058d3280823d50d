"""The global kNN graph: exact chunked search, content hashes, and the one cache every trial shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from icon_bench.data import graph as graph_mod
from icon_bench.data.graph import clear_graph_cache, global_knn, graph_key, knn_graph, tensor_digest
from icon_bench.data.load import load_dataset
from icon_bench.errors import DataError


def _brute(x: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """Each row's k largest scores (nearest first), from a full n x n matrix in float64."""
    x = x.double()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        score = x @ x.T
    else:
        score = -torch.cdist(x, x) ** 2
    score.fill_diagonal_(-float("inf"))
    return score.topk(k, dim=1).values


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(("n", "k", "chunk"), [(11, 10, None), (97, 3, 7), (300, 15, 64), (257, 1, None)])
def test_grouped_top_k_is_exact(metric: str, n: int, k: int, chunk: int | None) -> None:
    x = torch.from_numpy(np.random.default_rng(n + k).normal(size=(n, 5)).astype(np.float32))
    graph = knn_graph(x, k, metric, chunk_size=chunk)
    assert graph.shape == (n, k) and graph.dtype == torch.int64
    assert not (graph == torch.arange(n)[:, None]).any()
    assert all(len(set(row)) == k for row in graph.tolist())
    # The scores of the chosen neighbours are the k best ones, nearest first (ties may swap ids).
    xd = x.double()
    if metric == "cosine":
        xd = torch.nn.functional.normalize(xd, dim=1)
        got = (xd[:, None, :] * xd[graph]).sum(-1)
    else:
        got = -((xd[:, None, :] - xd[graph]) ** 2).sum(-1)
    torch.testing.assert_close(got, _brute(x, k, metric), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 1, 13])
def test_equidistant_neighbours_go_lower_index_first(chunk: int | None) -> None:
    # Points on a small integer grid: many exact ties, as in pixel data (digits: 1.3 % of rows).
    x = torch.randint(0, 3, (120, 4), generator=torch.Generator().manual_seed(0)).float()
    dist = torch.cdist(x.double(), x.double()) ** 2
    dist.fill_diagonal_(float("inf"))
    expected = dist.sort(dim=1, stable=True).indices[:, :6]  # nearest first, then the lower index
    assert torch.equal(knn_graph(x, 6, "euclidean", chunk_size=chunk), expected)


def test_duplicate_points_and_images() -> None:
    base = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base, base])  # every point has a twin at distance 0
    graph = knn_graph(x, 1, "euclidean")
    assert torch.equal(graph[:, 0], torch.cat([torch.arange(40, 80), torch.arange(40)]))
    images = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(knn_graph(images, 4, "cosine"), knn_graph(images.reshape(30, -1), 4, "cosine"))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(DataError, match="knn_metric must be 'cosine' or 'euclidean', got 'manhattan'"):
        knn_graph(torch.randn(5, 2), 2, "manhattan")
    with pytest.raises(DataError, match="knn=5 needs 1 <= k < n_train = 5"):
        global_knn([torch.randn(5, 2)], 5)


def test_digest_is_memoised_per_tensor_and_sees_in_place_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = graph_mod._digest_now
    monkeypatch.setattr(graph_mod, "_digest_now", lambda t: calls.append(1) or real(t))
    x = torch.randn(50, 4)
    first = tensor_digest(x)
    assert tensor_digest(x) == first and len(calls) == 1  # hashed once per loaded tensor
    assert tensor_digest(x.clone()) == first and len(calls) == 2  # same content, other object
    x[0, 0] += 1.0
    assert tensor_digest(x) != first and len(calls) == 3
    assert graph_key([x], 5, "cosine") != graph_key([x], 6, "cosine") != graph_key([x], 5, "euclidean")


def test_one_cache_for_the_dataset_option_and_a_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    real = graph_mod.knn_graph
    monkeypatch.setattr(graph_mod, "knn_graph", lambda *a, **kw: computed.append(a[1]) or real(*a, **kw))
    data = load_dataset({"name": "iris", "knn": 5, "knn_metric": "euclidean"}, cache_dir=tmp_path)
    assert data.meta["knn_cache"] == "computed" and computed == [5]
    # What a method asks for with the same content, k and metric: the same graph, not computed again.
    graph, source, key = global_knn([data.x_train.clone()], 5, "euclidean", cache_dir=tmp_path)
    assert source == "memory" and torch.equal(graph, data.knn_train) and key == data.meta["knn_key"]
    # Train and test stacked (transductive lookups) is other content: a graph of its own.
    both, source, _ = global_knn([data.x_train, data.x_test], 5, "euclidean", cache_dir=tmp_path)
    assert source == "computed" and both.shape == (len(data.x_train) + len(data.x_test), 5)
    assert computed == [5, 5]


def test_graphs_cached_under_an_older_rule_are_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(40, 3)
    first = global_knn([x], 3, cache_dir=tmp_path)
    assert first[1] == "computed" and first[2].endswith(f"-v{graph_mod.GRAPH_VERSION}")
    clear_graph_cache()
    assert global_knn([x], 3, cache_dir=tmp_path)[1] == "disk"
    # A file left by the rule before this one (same content, k and metric) is another key.
    monkeypatch.setattr(graph_mod, "GRAPH_VERSION", graph_mod.GRAPH_VERSION + 1)
    clear_graph_cache()
    assert global_knn([x], 3, cache_dir=tmp_path)[1] == "computed"
    assert len(list((tmp_path / "knn").glob("*.npy"))) == 2


def test_memory_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(graph_mod, "MEMORY_GRAPHS", 2)
    xs = [torch.randn(20, 3) for _ in range(3)]
    for x in xs:
        global_knn([x], 2, cache_dir=tmp_path)
    assert len(graph_mod._memory) == 2
    assert global_knn([xs[0]], 2, cache_dir=tmp_path)[1] == "disk"  # dropped from memory, still on disk
    clear_graph_cache()
    assert not graph_mod._memory


def test_unwritable_cache_still_gives_the_graph(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="kNN graph cache: cannot write"):
        graph, source, _ = global_knn([torch.randn(30, 3)], 3, cache_dir=blocker)
    assert source == "computed" and graph.shape == (30, 3)
