"""The global kNN graph over a split, content hashes, and the on-disk cache they key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from icon_bench.data.splits import DataSplits
from icon_bench.errors import DataError

__all__ = ["cache_root", "content_hash", "knn_graph"]


ENV_CACHE = "ICON_BENCH_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where derived data (kNN graphs) is cached: cache_dir, else $ICON_BENCH_CACHE, else ~/.cache/icon-bench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icon-bench"


def _tensor_digest(t: Tensor) -> str:
    h = hashlib.sha256()
    arr = t.detach().cpu().contiguous().numpy()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr.reshape(-1)).cast("B"))
    return h.hexdigest()


def content_hash(data: DataSplits) -> str:
    """sha256 (hex, 16 chars) over the splits' dtypes, shapes and bytes (val only when it has rows)."""
    tensors = [data.x_train, data.y_train, data.x_test, data.y_test]
    if data.y_val is not None and len(data.y_val):
        tensors += [data.x_val, data.y_val]  # no val split: the hash is what it was before protocol 2
    parts = [_tensor_digest(t) for t in tensors]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


@torch.no_grad()
def knn_graph(x: Tensor, k: int, metric: str = "cosine", chunk_size: int | None = None) -> Tensor:
    """(n, k) int64 indices of each row's k nearest other rows (self excluded), nearest first.

    Computed in row chunks so memory stays O(chunk * n), never n x n at once.
    """
    if metric not in ("cosine", "euclidean"):
        raise DataError(f"knn_metric must be 'cosine' or 'euclidean', got {metric!r}")
    n = len(x)
    if not 1 <= k < n:
        raise DataError(f"knn={k} needs 1 <= k < n_train = {n}")
    x = x.reshape(n, -1).float()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    else:
        sq = (x * x).sum(1)
    chunk = chunk_size or max(1, min(n, (1 << 24) // n))  # about 64 MiB of float32 scores per chunk
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for start in range(0, n, chunk):
        rows = x[start : start + chunk]
        # Larger score = nearer: similarity for cosine, negative squared distance for euclidean.
        score = rows @ x.T
        if metric == "euclidean":
            score = 2 * score - sq[start : start + chunk, None] - sq[None, :]
        idx = torch.arange(start, start + len(rows), device=x.device)
        score[torch.arange(len(rows), device=x.device), idx] = -float("inf")
        out[start : start + len(rows)] = score.topk(k, dim=1).indices
    return out


def _cached_knn(x: Tensor, k: int, metric: str, cache_dir: Path, meta: dict) -> Tensor:
    key = f"{_tensor_digest(x)[:24]}-{metric}-k{k}"
    meta["knn_key"] = key
    path = cache_dir / "knn" / f"{key}.npy"
    if path.is_file():
        try:
            graph = np.load(path, allow_pickle=False)
            if graph.shape == (len(x), k) and graph.dtype == np.int64:
                meta["knn_cache"] = "hit"
                return torch.from_numpy(graph)
        except Exception:  # a truncated or foreign file: recompute and overwrite
            pass
    graph_t = knn_graph(x, k, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so concurrent trials never read a half-written file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, graph_t.cpu().numpy())
    os.replace(tmp, path)
    meta["knn_cache"] = "miss"
    return graph_t
