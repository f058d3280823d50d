"""The global kNN graph at scale: icon-bench's exact chunked search against approximate-NN libraries.

Side by side on one machine and one thread: CPU seconds, wall seconds and recall@k (the share
of each row's exact k neighbours found) of
- icon-bench `knn_graph` (exact: one reused score buffer per chunk, grouped top-k),
- the implementation it replaced (exact: a fresh score matrix per chunk, plain top-k),
- faiss `IndexFlatL2` / `IndexFlatIP` (exact, BLAS) and `IndexHNSWFlat` (approximate),
- pynndescent `NNDescent` (approximate; its numba compilation is part of the first call).
Libraries that are not installed are skipped with a note. Data: MNIST PCA-50 train rows from
../shared/data/mnist.npz when present, else Gaussian blobs of the same shape.

    python benchmarks/bench_knn_graph.py                    # 60000 x 50, k 10, euclidean, ~2 min
    python benchmarks/bench_knn_graph.py --rows 20000 --metric cosine --skip-before
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before faiss / numba start their thread pools
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from icon_bench.data.graph import knn_graph  # noqa: E402

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"


def load_rows(rows: int, dim: int) -> tuple[torch.Tensor, str]:
    """MNIST PCA-`dim` train rows (the first `rows`), or blobs of that shape when the file is absent."""
    if MNIST.is_file():
        from icon_bench.data.load import load_dataset

        data = load_dataset({"name": "arrays", "path": str(MNIST), "pca": dim, "val_fraction": 0})
        return data.x_train[:rows].contiguous(), f"MNIST PCA-{dim} ({MNIST})"
    print(f"note: {MNIST} not found; using synthetic blobs")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, dim, generator=g) * 3
    x = centres[torch.randint(0, 10, (rows,), generator=g)] + torch.randn(rows, dim, generator=g)
    return x, f"Gaussian blobs, 10 centres, {dim}-d"


@torch.no_grad()
def before(x: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """The exact search icon-bench had before: a fresh (chunk x n) score matrix per chunk, plain top-k."""
    n = len(x)
    x = x.reshape(n, -1).float()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    else:
        sq = (x * x).sum(1)
    chunk = max(1, min(n, (1 << 24) // n))
    out = torch.empty(n, k, dtype=torch.int64)
    for start in range(0, n, chunk):
        rows = x[start : start + chunk]
        score = rows @ x.T
        if metric == "euclidean":
            score = 2 * score - sq[start : start + chunk, None] - sq[None, :]
        idx = torch.arange(start, start + len(rows))
        score[torch.arange(len(rows)), idx] = -float("inf")
        out[start : start + len(rows)] = score.topk(k, dim=1).indices
    return out


def _faiss(kind: str) -> Callable[[np.ndarray, int, str], np.ndarray] | None:
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)

    def run(x: np.ndarray, k: int, metric: str) -> np.ndarray:
        if metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        d = x.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        else:
            space = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
            index = faiss.IndexHNSWFlat(d, 32, space)
            index.hnsw.efConstruction = 64
            index.hnsw.efSearch = int(kind.split("-")[1])
        index.add(x)
        _, ids = index.search(x, k + 1)
        return _drop_self(ids, k)

    return run


def _pynndescent() -> Callable[[np.ndarray, int, str], np.ndarray] | None:
    try:
        from pynndescent import NNDescent
    except ImportError:
        return None

    def run(x: np.ndarray, k: int, metric: str) -> np.ndarray:
        index = NNDescent(x, n_neighbors=k + 1, metric=metric, random_state=0, n_jobs=1, low_memory=True)
        ids, _ = index.neighbor_graph
        return _drop_self(ids, k)

    return run


def _drop_self(ids: np.ndarray, k: int) -> np.ndarray:
    """k neighbours per row from k + 1 found ones, without the row itself (wherever it was listed)."""
    rows = np.arange(len(ids))[:, None]
    keep = ids != rows
    out = np.empty((len(ids), k), dtype=np.int64)
    for i, (row, mask) in enumerate(zip(ids, keep)):
        out[i] = row[mask][:k] if mask.sum() >= k else np.resize(row[mask], k)
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact k neighbours that `found` lists."""
    hits = (found[:, :, None] == exact[:, None, :]).any(2)
    return float(hits.mean())


def timed(fn: Callable[[], object]) -> tuple[object, float, float, float]:
    """(result, user CPU s, system CPU s, wall s) of one call."""
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn()
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return out, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, w1 - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 128], help="HNSW efSearch values to try")
    ap.add_argument("--skip-before", action="store_true", help="leave out the replaced implementation (~40 CPU s)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, source = load_rows(args.rows, args.dim)
    xn = x.numpy().astype(np.float32)
    print(f"{len(x)} x {x.shape[1]} ({source}), k {args.k}, {args.metric}, 1 thread, torch {torch.__version__}")

    exact, user, sys_, wall = timed(lambda: knn_graph(x, args.k, args.metric).numpy())
    table = [["icon-bench knn_graph (exact)", user + sys_, user, sys_, wall, 1.0]]
    runs: list[tuple[str, Callable[[], np.ndarray]]] = []
    if not args.skip_before:
        runs.append(("before: fresh matrix per chunk (exact)", lambda: before(x, args.k, args.metric).numpy()))
    flat = _faiss("flat")
    if flat is None:
        print("note: faiss-cpu not installed; faiss rows skipped")
    else:
        runs.append(("faiss IndexFlat (exact)", lambda: flat(xn, args.k, args.metric)))
        for ef in args.ef:
            hnsw = _faiss(f"hnsw-{ef}")
            runs.append((f"faiss HNSW32 efSearch {ef} (approx.)", lambda h=hnsw: h(xn, args.k, args.metric)))
    nnd = _pynndescent()
    if nnd is None:
        print("note: pynndescent not installed; its row skipped")
    else:
        runs.append(("pynndescent, incl. numba JIT (approx.)", lambda: nnd(xn, args.k, args.metric)))
        runs.append(("pynndescent, compiled (approx.)", lambda: nnd(xn, args.k, args.metric)))
    for name, fn in runs:
        found, user, sys_, wall = timed(fn)
        table.append([name, user + sys_, user, sys_, wall, recall(np.asarray(found), exact)])
    base = table[0][1]
    for row in table:
        row.append(row[1] / base)
    print(tabulate(table, headers=["method", "CPU s", "user s", "sys s", "wall s", "recall@k", "CPU / exact"],
                   floatfmt=("", ".2f", ".2f", ".2f", ".2f", ".4f", ".2f"), tablefmt="simple"))
    print("An approximate method is worth using only where it is faster than exact at recall 1.0.")


if __name__ == "__main__":
    main()
