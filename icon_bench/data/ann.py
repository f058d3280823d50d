"""The approximate kNN graph (faiss HNSW, an optional extra) with its recall measured against exact search."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench import extras

__all__ = ["available", "approximate_knn", "exact_rows", "recall_at_k"]

#: Rows whose exact neighbours the recall is measured on (and efSearch tuned against).
RECALL_SAMPLE = 1000
#: Links per node of the HNSW graph (faiss's default; 32 costs 1.6x the build for a little recall).
HNSW_M = 16
#: The largest efSearch tried before giving up on the recall target (the record says what it got).
MAX_EF = 1024
#: Rows per search call: bounds the (rows, k) results and the normalised copy of a chunk.
SEARCH_ROWS = 1 << 14


def available() -> bool:
    """Whether faiss (``pip install icon-bench[ann]``, i.e. faiss-cpu) can be imported."""
    return extras.available("faiss")


def _rows(x: Tensor, a: int, b: int, metric: str) -> np.ndarray:
    """Rows a..b as a contiguous float32 array, unit length for cosine (a chunk-sized copy at most)."""
    part = x[a:b]
    if metric == "cosine":
        part = torch.nn.functional.normalize(part, dim=1)
    return np.ascontiguousarray(part.numpy(), dtype=np.float32)


@torch.no_grad()
def exact_rows(x: Tensor, rows: Tensor, k: int, metric: str, step: int = 64) -> Tensor:
    """(len(rows), k) exact nearest other rows of the given rows, nearest first (the recall reference)."""
    norms_sq = torch.cat([(x[a : a + SEARCH_ROWS] ** 2).sum(1) for a in range(0, len(x), SEARCH_ROWS)])
    out = []
    for a in range(0, len(rows), step):
        idx = rows[a : a + step]
        score = x[idx] @ x.T
        if metric == "cosine":  # the row's own norm cannot change its order
            score /= norms_sq.sqrt().clamp_min(1e-12)
        else:
            score = 2 * score - norms_sq
        score[torch.arange(len(idx)), idx] = -math.inf
        out.append(score.topk(k, dim=1).indices)
    return torch.cat(out)


def index_ef(ef: int, k: int) -> int:
    """The efSearch a search with ``ef`` ran at (never below k + 1 results)."""
    return max(ef, k + 1)


def recall_at_k(found: Tensor, exact: Tensor) -> float:
    """Mean over rows of |found_i & exact_i| / k."""
    hits = (found[:, :, None] == exact[:, None, :]).any(2).sum(1)
    return float(hits.double().mean() / exact.shape[1])


def _drop_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """k results per row without the row itself (search asked for k + 1), order kept."""
    self_hit = ids == rows[:, None]
    order = np.argsort(self_hit, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1)


def approximate_knn(
    x: Tensor, k: int, metric: str = "cosine", *, recall: float = 0.95, seed: int = 0, progress: Any = None
) -> tuple[Tensor, dict[str, Any]]:
    """(n, k) int64 approximate nearest other rows (nearest first) and a record of how they were found.

    A faiss HNSW graph index (M = 16 links, efConstruction 40) holds the one extra copy of the
    features (unit rows for cosine). efSearch (the candidate list of a query) doubles from 16 until
    recall@k against exact search on RECALL_SAMPLE rows reaches ``recall``; the record holds that
    recall, efSearch and the timings. Rows left short of k results are searched exactly.
    Equidistant neighbours are not ordered by index as in the exact graph.
    """
    import faiss

    n = len(x)
    x = x.reshape(n, -1).float()
    d = x.shape[1]
    t0 = time.perf_counter()
    ip = metric == "cosine"
    index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
    index.hnsw.efConstruction = 40
    for a in range(0, n, SEARCH_ROWS):
        index.add(_rows(x, a, a + SEARCH_ROWS, metric))
        if progress is not None:
            progress("index", min(n, a + SEARCH_ROWS), n)
    built = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = torch.from_numpy(np.sort(rng.choice(n, size=min(n, RECALL_SAMPLE), replace=False)))
    exact = exact_rows(x, sample, k, metric)
    queries = _rows(x[sample], 0, len(sample), metric)
    ef, got = 16, 0.0
    while True:
        index.hnsw.efSearch = index_ef(ef, k)
        found = _drop_self(index.search(queries, k + 1)[1], sample.numpy(), k)
        got = recall_at_k(torch.from_numpy(found), exact)
        if got >= recall or ef >= MAX_EF:
            break
        ef *= 2
    tuned = time.perf_counter()
    out = np.empty((n, k), dtype=np.int64)
    for a in range(0, n, SEARCH_ROWS):
        ids = index.search(_rows(x, a, a + SEARCH_ROWS, metric), k + 1)[1]
        out[a : a + len(ids)] = _drop_self(ids, np.arange(a, a + len(ids)), k)
        if progress is not None:
            progress("search", min(n, a + SEARCH_ROWS), n)
    del index
    graph = torch.from_numpy(out)
    short = torch.nonzero((graph < 0).any(1)).reshape(-1)
    if len(short):
        graph[short] = exact_rows(x, short, k, metric)
    record = {
        "method": "faiss-hnsw-flat",
        "hnsw_m": HNSW_M,
        "ef_search": index_ef(ef, k),
        f"recall@{k}": round(got, 4),
        "recall_target": recall,
        "recall_sample": len(sample),
        "rows_searched_exactly": len(short),
        "build_s": round(built - t0, 2),
        "tune_s": round(tuned - built, 2),
        "search_s": round(time.perf_counter() - tuned, 2),
    }
    return graph, record
