"""The approximate kNN graph at ImageNet scale: faiss IVF-Flat and HNSW over bench_scale.py's features,
CPU seconds per phase and recall@10 against exact search on 1,000 sampled rows.

    python benchmarks/bench_scale.py --sizes 1281167 --paths load          # writes the features once
    python benchmarks/bench_ann_scale.py /tmp/icon-bench-scale/n1281167/x_train.npy ivf:nlist=1131 hnsw:m=16:efc=40

Each index is built over every row of the file (or --rows), its search knob (IVF nprobe, HNSW
efSearch) doubled from 1 / 16 until recall@10 on the sample reaches --recall, then every row searched
(k + 1 results, the row itself dropped), as icon_bench.data.ann does; --knob fixes the knob instead,
and --search-rows searches that many rows only, its CPU scaled to every row (the search is linear
in the rows searched; the totals then say so). A line per phase as it ends (so
a run stopped early still says how far it got), then the totals. CPU seconds are the process's
(all faiss threads); the exact search of the sample, the recall's reference, is reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from icon_bench.data.ann import _drop_self, exact_rows, recall_at_k


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def _build(x: np.ndarray, kind: str, params: dict[str, int], rng: np.random.Generator):
    import faiss

    n, d = x.shape
    if kind == "ivf":
        nlist = params.get("nlist", int(math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.train(np.ascontiguousarray(x[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))]))
    else:
        index = faiss.IndexHNSWFlat(d, params.get("m", 16))
        index.hnsw.efConstruction = params.get("efc", 40)
    for a in range(0, n, 1 << 17):
        index.add(np.ascontiguousarray(x[a : a + (1 << 17)]))
        _say(phase="build", index=kind, rows=min(n, a + (1 << 17)))
    return index


def run(x: np.ndarray, kind: str, params: dict[str, int], args: argparse.Namespace, exact: torch.Tensor, sample: np.ndarray) -> None:
    k, n = 10, len(x)
    c0, w0 = _cpu(), time.perf_counter()
    index = _build(x, kind, params, np.random.default_rng(0))
    built = _cpu() - c0
    _say(phase="built", index=kind, cpu_s=round(built, 1))
    knob = args.knob or (1 if kind == "ivf" else 16)
    while True:
        if kind == "ivf":
            index.nprobe = knob
        else:
            index.hnsw.efSearch = max(knob, k + 1)
        found = _drop_self(index.search(np.ascontiguousarray(x[sample]), k + 1)[1], sample, k)
        recall = recall_at_k(torch.from_numpy(found), exact)
        _say(phase="tune", index=kind, knob=knob, recall=round(recall, 4))
        if recall >= args.recall or knob >= 1024 or args.knob:
            break
        knob *= 2
    tuned = _cpu() - c0
    searched = min(n, args.search_rows or n)
    for a in range(0, searched, 1 << 16):
        index.search(np.ascontiguousarray(x[a : min(searched, a + (1 << 16))]), k + 1)
        if (a >> 16) % 4 == 3:
            _say(phase="search", index=kind, rows=min(searched, a + (1 << 16)), cpu_s=round(_cpu() - c0 - tuned, 1))
    total = _cpu() - c0
    search = (total - tuned) * n / searched  # a search's cost is linear in the rows searched
    _say(result=kind, rows=n, params=params, knob=knob, recall_at_10=round(recall, 4), build_cpu_s=round(built, 1),
         tune_cpu_s=round(tuned - built, 1), rows_searched=searched, search_cpu_s=round(search, 1),
         total_cpu_s=round(tuned + search, 1), wall_s=round(time.perf_counter() - w0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features", help="an (n, d) float32 .npy (bench_scale.py's x_train.npy)")
    ap.add_argument("indexes", nargs="+", help="ivf[:nlist=N] or hnsw[:m=M][:efc=E]")
    ap.add_argument("--rows", type=int, default=0, help="the first ROWS rows only (0: all)")
    ap.add_argument("--recall", type=float, default=0.95)
    ap.add_argument("--knob", type=int, default=0, help="search at this nprobe / efSearch only (0: tune it)")
    ap.add_argument("--search-rows", type=int, default=0,
                    help="search only the first ROWS rows and scale the search's CPU to all of them (0: all)")
    args = ap.parse_args()
    x = np.load(args.features, mmap_mode="r")
    x = x[: args.rows] if args.rows else x
    sample = np.sort(np.random.default_rng(0).choice(len(x), 1000, replace=False))
    c0 = _cpu()
    exact = exact_rows(torch.from_numpy(np.array(x[: len(x)], copy=False)), torch.from_numpy(sample), 10, "euclidean")
    _say(phase="exact sample", cpu_s=round(_cpu() - c0, 1))
    for spec in args.indexes:
        kind, *rest = spec.split(":")
        run(x, kind, {key: int(v) for key, v in (p.split("=") for p in rest)}, args, exact, sample)


if __name__ == "__main__":
    main()
