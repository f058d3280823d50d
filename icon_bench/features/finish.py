"""Finishing an embed: shards joined into memory-mappable arrays, labels, the global kNN graph, the manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icon_bench.errors import DataError
from icon_bench.features.cache import write_manifest

__all__ = ["finish", "graph_of", "write_cache"]


def _join(paths: list[Path], target: Path) -> np.ndarray:
    """Concatenate .npy shards into one .npy written through a memory map (never the whole array in memory twice)."""
    first = np.load(paths[0], mmap_mode="r")
    rows = sum(np.load(p, mmap_mode="r").shape[0] for p in paths)
    tmp = target.with_name(f".{target.stem}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(rows, *first.shape[1:]))
    at = 0
    for p in paths:
        part = np.load(p, mmap_mode="r")
        out[at : at + len(part)] = part
        at += len(part)
    out.flush()
    del out
    tmp.replace(target)
    return np.load(target, mmap_mode="r")


def graph_of(
    features: np.ndarray, k: int, device: torch.device | str = "cpu", approximate: bool | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The cosine kNN graph (n, k) int64 of the rows, nearest first, and how it was searched.

    As `icon_bench.data.graph.global_knn` chooses (`use_approximate`; ``approximate`` forces
    either): exact in chunks on `device` (record ``{"method": "exact"}``), or on the CPU above
    `APPROX_ROWS` rows with faiss installed approximate (`icon_bench.data.ann`), whose record holds
    its recall@k against exact search on a sample, its parameters and timings.
    """
    from icon_bench.data import ann
    from icon_bench.data.graph import knn_graph, use_approximate
    from icon_bench.data.splits import _as_tensor

    k = min(k, len(features) - 1)
    if k < 1:
        raise DataError(f"feature cache: a kNN graph needs at least 2 train rows, got {len(features)}")
    x = _as_tensor(np.asarray(features, dtype=np.float32))  # read-only: the searches only read it
    if use_approximate(len(x), device, approximate):
        graph, record = ann.approximate_knn(x, k, "cosine")
        return graph.numpy(), record
    return knn_graph(x, k, "cosine", device=device).cpu().numpy(), {"method": "exact"}


def write_cache(
    folder: Path,
    arrays: dict[str, np.ndarray],
    identity: dict[str, Any],
    extra: dict[str, Any],
    *,
    knn: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Write a cache from in-memory arrays (importers): `features_<split>`, `labels_<split>`, optional
    `views_train` / `knn_train`; the graph is computed when asked (`knn`) and not given. Returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        np.save(folder / f"{stem}.npy", arr)
    extra = dict(extra)
    if knn and "knn_train" not in arrays:
        graph, extra["graph"] = graph_of(arrays["features_train"], knn, device)
        np.save(folder / "knn_train.npy", graph)
    elif "knn_train" in arrays:
        extra.setdefault("graph", {"method": "given"})  # the source's own graph, searched elsewhere
    return write_manifest(folder, identity, extra)


def finish(job: Any, *, device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Join the job's shards into the cache folder, save labels, compute the graph (its record in the
    manifest's ``graph``: exact, or approximate with its recall), write the manifest last."""
    job.out.mkdir(parents=True, exist_ok=True)
    dims = {}
    for split, (_, labels) in job.splits.items():
        count = -(-len(labels) // job.shard_size)
        parts = [job.shard_path(split, i) for i in range(count)]
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise DataError(f"embed: shards missing after the run: {', '.join(missing[:5])}")
        dims[split] = _join(parts, job.out / f"features_{split}.npy").shape[1]
        np.save(job.out / f"labels_{split}.npy", labels)
        if job.views_of(split):
            _join([job.shard_path(split, i, "views") for i in range(count)], job.out / f"views_{split}.npy")
    extra: dict[str, Any] = {"label": job.label, "num_classes": job.num_classes, "dim": dims.get("train")}
    if job.knn:
        if progress:
            print(f"embed: kNN graph (k={job.knn}, cosine) over {len(job.splits['train'][1])} train rows", file=sys.stderr)
        train = np.load(job.out / "features_train.npy", mmap_mode="r")
        graph, extra["graph"] = graph_of(train, job.knn, device)
        np.save(job.out / "knn_train.npy", graph)
    return write_manifest(job.out, job.identity, extra)
