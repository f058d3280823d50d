"""The global kNN graph over a split, content hashes, and the caches (in-process and on disk) they key."""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import threading
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench import extras
from icon_bench.data import ann
from icon_bench.data.splits import DataSplits
from icon_bench.errors import DataError

__all__ = [
    "cache_root",
    "clear_graph_cache",
    "content_hash",
    "global_knn",
    "graph_key",
    "graph_record",
    "knn_graph",
    "tensor_digest",
]


ENV_CACHE = "ICON_BENCH_CACHE"
METRICS = ("cosine", "euclidean")
#: Bytes of scores one chunk of rows may hold. On CPU a block that stays in the last-level cache
#: beats a big one (60k x 50 MNIST: 64-row chunks 4.7 CPU s, 1024-row chunks 7.8 CPU s); a GPU
#: wants big blocks to fill the device.
CHUNK_BYTES = {"cpu": 16 << 20, "cuda": 1 << 30}
#: The fewest rows a chunk holds however wide the rows (64 x 1.28 M scores: 330 MB).
MIN_CHUNK_ROWS = 64
#: Graphs the in-process cache keeps (least recently used dropped first); one per dataset and k.
MEMORY_GRAPHS = 8
#: Part of every cache key: raise it when the graph a content gets changes (2: equidistant
#: neighbours by index), so graphs cached by an older rule are never read back as current.
GRAPH_VERSION = 2
#: The end of an approximate graph's key: the index that made it, so graphs an earlier index made
#: (HNSW's, cached under a bare "-ann" before IVF-Flat replaced it) are never read back as its own.
ANN_KEY = "-ivf-ann"
#: Above this many rows a CPU graph is approximate (icon_bench.data.ann) when faiss is installed:
#: the exact search is O(n^2 d), some 14 CPU hours at 1.28 M x 768.
APPROX_ROWS = 200_000


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where derived data (kNN graphs) is cached: cache_dir, else $ICON_BENCH_CACHE, else ~/.cache/icon-bench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icon-bench"


# -- content hashes -------------------------------------------------------------------------------
_digests: dict[int, tuple[weakref.ref, tuple[int, int, tuple[int, ...]], str]] = {}
_lock = threading.Lock()


def _digest_now(t: Tensor) -> str:
    h = hashlib.sha256()
    arr = t.detach().cpu().contiguous().numpy()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr.reshape(-1)).cast("B"))
    return h.hexdigest()


def tensor_digest(t: Tensor) -> str:
    """sha256 (hex) of a tensor's dtype, shape and bytes, computed once per tensor object.

    The memo is keyed by the object and checked against its version counter, storage and shape,
    so an in-place change (or `.data` swap) hashes again; every trial on one loaded dataset
    shares the one hash.
    """
    stamp = (t._version, t.data_ptr(), tuple(t.shape))
    with _lock:
        entry = _digests.get(id(t))
        if entry is not None and entry[0]() is t and entry[1] == stamp:
            return entry[2]
    digest = _digest_now(t)
    key = id(t)
    with _lock:
        _digests[key] = (weakref.ref(t, lambda _ref, key=key: _digests.pop(key, None)), stamp, digest)
    return digest


def content_hash(data: DataSplits) -> str:
    """sha256 (hex, 16 chars) over the splits' dtypes, shapes and bytes (val only when it has rows).

    Rows stored uint8 (`data.pixels`) are hashed as stored, with what their conversion does.
    """
    tensors = [data.stored("train"), data.y_train, data.stored("test"), data.y_test]
    if data.y_val is not None and len(data.y_val):
        tensors += [data.stored("val"), data.y_val]  # no val split: the hash is what it was before protocol 2
    parts = [tensor_digest(t) for t in tensors]
    if data.pixels is not None:
        parts.append(data.pixels.describe())
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def graph_key(parts: Sequence[Tensor], k: int, metric: str, approximate: bool = False) -> str:
    """The cache key of the graph over the rows of ``parts`` stacked in order: content, metric, k,
    the graph rule's version, and ANN_KEY for an approximate graph (never read back as an exact one)."""
    digests = [tensor_digest(p) for p in parts]
    content = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    return f"{content[:24]}-{metric}-k{k}-v{GRAPH_VERSION}" + (ANN_KEY if approximate else "")


# -- exact chunked search -------------------------------------------------------------------------
def _check(n: int, k: int, metric: str) -> None:
    if metric not in METRICS:
        raise DataError(f"knn_metric must be 'cosine' or 'euclidean', got {metric!r}")
    if not 1 <= k < n:
        raise DataError(f"knn={k} needs 1 <= k < n_train = {n}")


@torch.no_grad()
def knn_graph(
    x: Tensor,
    k: int,
    metric: str = "cosine",
    chunk_size: int | None = None,
    *,
    device: str | torch.device | None = None,
) -> Tensor:
    """(n, k) int64 indices of each row's k nearest other rows (self excluded), nearest first; exact.

    Computed on ``device`` (default: x's) in chunks of rows whose scores fill one buffer
    allocated once (CHUNK_BYTES), so memory stays O(chunk * n) and no chunk allocates afresh.
    The top k of a row comes from its groups of about sqrt(n / k) columns: the k groups with the
    largest maxima hold every one of the k largest scores, so a cheap max over groups and a top k
    over k groups replace a top k over n columns (CPU top k was 60 % of the time). Equidistant
    neighbours are taken lower index first, so the graph does not depend on device or chunk size.
    """
    n = len(x)
    _check(n, k, metric)
    dev = torch.device(device) if device is not None else x.device
    x = _unit_rows(x.reshape(n, -1).to(dev, torch.float32), metric)  # the one copy (cosine only)
    group = max(1, round(math.sqrt(n / k)))
    groups = -(-n // group)
    if groups < k:
        group, groups = 1, n
    width = groups * group
    # Score = larger is nearer: cosine x_i . x_j, euclidean 2 x_i . x_j - |x_j|^2 (-|x_j - x_i|^2
    # up to the row's own |x_i|^2, which cannot change a row's order). The product is written
    # straight into the buffer; nothing else of size n x d is allocated.
    sq = None if metric == "cosine" else _row_norms_sq(x)
    chunk = chunk_size or chunk_rows(n, width, dev)
    buf = torch.empty(chunk, width, device=dev)
    buf[:, n:] = -math.inf  # padding columns: the product never writes them
    offsets = torch.arange(group, device=dev)
    diag = torch.arange(chunk, device=dev) * (width + 1)
    out = torch.empty(n, k, dtype=torch.int64, device=dev)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        score = buf[:m]
        product = torch.mm(x[start : start + m], x.T, out=score[:, :n])
        if sq is not None:
            product.mul_(2.0).sub_(sq)
        score.view(-1)[diag[:m] + start] = -math.inf  # self
        top_groups = _first_k_best(score.view(m, groups, group).amax(2), k)
        cand = (top_groups.unsqueeze(2) * group + offsets).reshape(m, k * group)  # ascending columns
        picked = cand.gather(1, _first_k_best(score.gather(1, cand), k))
        # Nearest first; among equal scores the lower index first (a stable sort keeps column order).
        order = score.gather(1, picked).sort(dim=1, descending=True, stable=True).indices
        out[start : start + m] = picked.gather(1, order)
    return out


def chunk_rows(n: int, width: int, device: torch.device) -> int:
    """Rows per chunk of scores: CHUNK_BYTES of them, but never fewer than MIN_CHUNK_ROWS (at a
    million rows the budget alone gives a few rows per chunk, 8x slower than 256-row chunks)."""
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"]) // (4 * width)
    return max(1, min(n, max(budget, MIN_CHUNK_ROWS)))


def _unit_rows(x: Tensor, metric: str) -> Tensor:
    """Rows scaled to unit length for cosine (a new tensor, in chunks), x itself for euclidean."""
    if metric != "cosine":
        return x
    out = torch.empty_like(x)
    for a in range(0, len(x), 1 << 14):
        out[a : a + (1 << 14)] = torch.nn.functional.normalize(x[a : a + (1 << 14)], dim=1)
    return out


def _row_norms_sq(x: Tensor) -> Tensor:
    """|x_i|^2 per row, a chunk of rows at a time (no n x d temporary)."""
    return torch.cat([(x[a : a + (1 << 14)] ** 2).sum(1) for a in range(0, len(x), 1 << 14)])


def _first_k_best(values: Tensor, k: int) -> Tensor:
    """Per row, the positions (ascending) of the k largest values, ties going to the lower position.

    torch.topk breaks ties as its kernel happens to (CPU and CUDA differ), so pixel data, whose
    distances tie often, would get a graph that depends on the device and the chunking; this rule
    gives one graph. Used on group maxima it keeps every group that holds a chosen element.
    """
    kth = values.topk(k, dim=1).values[:, -1:]
    above = values > kth
    tied = values == kth
    # The lowest-positioned ties fill the places the strictly larger values leave.
    room = k - above.sum(1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(1) <= room))
    return chosen.nonzero()[:, 1].reshape(len(values), k)


# -- the caches -----------------------------------------------------------------------------------
_memory: collections.OrderedDict[str, Tensor] = collections.OrderedDict()


def clear_graph_cache() -> None:
    """Forget the graphs held in this process (the on-disk cache stays)."""
    with _lock:
        _memory.clear()


def _read_disk(path: Path, shape: tuple[int, int]) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        graph = np.load(path, allow_pickle=False)
    except Exception:  # a truncated or foreign file: recompute and overwrite
        return None
    if graph.shape != shape or graph.dtype != np.int64:
        return None
    return torch.from_numpy(graph)


def _write_disk(path: Path, graph: Tensor) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so concurrent trials never read a half-written file.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, graph.numpy())
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full cache: the graph is still good for this process
        warnings.warn(f"kNN graph cache: cannot write {path}: {exc}", stacklevel=3)


def use_approximate(n: int, device: str | torch.device | None, approximate: bool | None) -> bool:
    """Whether a graph over n rows is searched approximately: as asked, else on the CPU above
    APPROX_ROWS rows; without faiss, exact with a notice."""
    want = approximate if approximate is not None else (n > APPROX_ROWS and torch.device(device or "cpu").type == "cpu")
    if want and not ann.available():
        warnings.warn(
            f"kNN graph over {n:,} rows: the exact O(n^2) search runs; the approximate one"
            + extras.missing_message("", "faiss"),
            stacklevel=3,
        )
        return False
    return bool(want)


def global_knn(
    parts: Sequence[Tensor],
    k: int,
    metric: str = "cosine",
    *,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    approximate: bool | None = None,
) -> tuple[Tensor, str, str]:
    """The kNN graph over the rows of ``parts`` stacked in order, from the cheapest place that has it.

    Returns (graph (n, k) int64 on the CPU, where it came from: "memory", "disk" or "computed",
    its cache key). One cache serves every trial and the dataset option: in this process a dict
    keyed by content, k and metric (so local trials and a Ray worker's trials share it), and
    `cache_root(cache_dir)`/knn/<key>.npy across processes. A miss computes on ``device``: exact,
    or approximate (:func:`use_approximate`; ``approximate`` forces either), whose recall against
    exact search on a sample :func:`graph_record` gives back (also stored beside the graph).
    """
    n = sum(len(p) for p in parts)
    _check(n, k, metric)
    approx = use_approximate(n, device, approximate)
    key = graph_key(parts, k, metric, approximate=approx)
    path = cache_root(cache_dir) / "knn" / f"{key}.npy"
    with _lock:
        graph = _memory.get(key)
        if graph is not None:
            _memory.move_to_end(key)
    source = "memory"
    if graph is None:
        graph = _read_disk(path, (n, k))
        source = "disk"
    if graph is None:
        x = parts[0] if len(parts) == 1 else torch.cat([p.reshape(len(p), -1) for p in parts])
        if approx:
            graph, record = _approximate(x, k, metric)
        else:
            graph, record = knn_graph(x, k, metric, device=device).cpu(), {"method": "exact"}
        _records[key] = record
        source = "computed"
    if source != "disk" and not path.is_file():
        _write_disk(path, graph)  # other processes (and this cache_dir) get it too
        _write_record(path, _records.get(key))
    with _lock:
        _memory[key] = graph
        _memory.move_to_end(key)
        while len(_memory) > MEMORY_GRAPHS:
            _memory.popitem(last=False)
    return graph, source, key


def _approximate(x: Tensor, k: int, metric: str) -> tuple[Tensor, dict[str, Any]]:
    from tqdm.auto import tqdm

    with tqdm(total=2 * len(x), desc="kNN graph (approximate)", unit="row", disable=None) as bar:

        def progress(_stage: str, done: int, n: int) -> None:
            bar.n = done + (n if _stage == "search" else 0)
            bar.refresh()

        return ann.approximate_knn(x, k, metric, progress=progress)


_records: dict[str, dict[str, Any]] = {}


def _write_record(path: Path, record: dict[str, Any] | None) -> None:
    if record is None:
        return
    try:
        path.with_suffix(".json").write_text(json.dumps(record, sort_keys=True))
    except OSError:  # the graph itself is what matters; its record is a courtesy
        pass


def graph_record(key: str, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """How the graph under ``key`` was searched: {"method": "exact"} or the approximate index's
    record (its recall@k against exact search on a sample, parameters, timings)."""
    if key in _records:
        return dict(_records[key])
    side = cache_root(cache_dir) / "knn" / f"{key}.json"
    try:
        return dict(json.loads(side.read_text()))
    except (OSError, ValueError):
        return {"method": "approximate" if key.endswith("-ann") else "exact"}
