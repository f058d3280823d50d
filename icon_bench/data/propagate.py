"""Propagation on the global kNN graph as a sparse matrix power: P + P^2 + ... + P^steps, top entries per row kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from icon_bench.errors import DataError

__all__ = ["KEEP_PER_STEP", "propagate_graph", "transition"]

#: Default entries kept per row: this many times k per step (k = 10, steps = 2: 40 of at most 110).
KEEP_PER_STEP = 2
#: Rows whose walks are expanded at once: bounds the chunk's nnz at ROWS x k^steps.
CHUNK_ROWS = 1 << 14


def transition(knn: Tensor | np.ndarray, n_cols: int | None = None) -> sp.csr_matrix:
    """The row-normalised graph P (n x n CSR, float64): p_ij = 1 / |N(i)| over the distinct j != i listed.

    As the knn kernel reads the graph: a repeated neighbour counts once, the row itself and -1
    padding not at all, so a batch holding every row gives the kernel's p exactly.
    """
    nb = np.asarray(knn, dtype=np.int64)
    n = nb.shape[0]
    n_cols = n if n_cols is None else n_cols
    rows = np.repeat(np.arange(n, dtype=np.int64), nb.shape[1])
    cols = nb.reshape(-1)
    keep = (cols >= 0) & (cols != rows)
    if keep.any() and int(cols[keep].max()) >= n_cols:
        raise DataError(f"propagation: the kNN graph lists row {int(cols[keep].max())}, beyond its {n_cols} rows")
    adj = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, n_cols))
    adj.data[:] = 1.0  # duplicates were summed on construction: count each neighbour once
    degree = np.asarray(adj.sum(1)).reshape(-1)
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(degree, 1.0)) @ adj)


def _top_rows(block: sp.csr_matrix, first_row: int, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``keep`` largest entries of each row of ``block`` (rows first_row..), self dropped, as
    (rows, keep) columns (-1 padded) and weights normalised over what is kept; and the share of
    each row's mass kept (1 for a row that lost nothing or had nothing)."""
    block = block.tocoo()
    r, c, w = block.row, block.col, block.data
    alive = (c != r + first_row) & (w > 0)
    r, c, w = r[alive], c[alive], w[alive]
    order = np.lexsort((c, -w, r))  # by row, heaviest first, lower column first among equals
    r, c, w = r[order], c[order], w[order]
    starts = np.searchsorted(r, np.arange(block.shape[0]))
    rank = np.arange(len(r)) - starts[r]
    sel = rank < keep
    out_c = np.full((block.shape[0], keep), -1, dtype=np.int64)
    out_w = np.zeros((block.shape[0], keep), dtype=np.float64)
    out_c[r[sel], rank[sel]] = c[sel]
    out_w[r[sel], rank[sel]] = w[sel]
    full = np.bincount(r, weights=w, minlength=block.shape[0])[:, None]
    total = out_w.sum(1, keepdims=True)
    share = np.divide(total, full, out=np.ones_like(total), where=full > 0).reshape(-1)
    out_w = np.divide(out_w, total, out=np.zeros_like(out_w), where=total > 0)
    return out_c, out_w, share


def propagate_graph(knn: Tensor, steps: int, keep: int | None = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The graph's walks of 1..steps steps: (n, m) int64 columns (-1 padded), (n, m) float32 weights, a record.

    Row i holds P_i + (P^2)_i + ... + (P^steps)_i without i itself, its ``keep`` heaviest entries
    (default KEEP_PER_STEP * k * steps; ties to the lower index), normalised over those kept: the
    I-Con propagated p, a sparse matrix power, never n x n. Rows are expanded CHUNK_ROWS at a time,
    so the working set is CHUNK_ROWS x k^steps entries besides the (n, m) result. When ``keep``
    covers every row's support (at most k + k^2 + ... + k^steps) nothing is cut and the weights
    equal the dense formula's; the record says how many rows were cut and the share of the mass
    kept (mean and least over rows).
    """
    steps = int(steps)
    if steps < 1:
        raise DataError(f"propagation: steps must be >= 1, got {steps!r}")
    nb = knn.numpy() if isinstance(knn, Tensor) else np.asarray(knn)
    n, k = nb.shape
    keep = int(keep) if keep is not None else KEEP_PER_STEP * k * steps
    if keep < 1:
        raise DataError(f"propagation: keep must be >= 1 entries per row, got {keep!r}")
    p = transition(nb)
    width = min(keep, max(n - 1, 1))
    cols = np.full((n, width), -1, dtype=np.int64)
    weights = np.zeros((n, width), dtype=np.float32)
    cut, kept_mass, mean_mass = 0, 1.0, 0.0
    for a in range(0, n, CHUNK_ROWS):
        power = p[a : a + CHUNK_ROWS]
        total = power.copy()
        for _ in range(steps - 1):
            power = power @ p
            total = total + power
        c, w, share = _top_rows(total, a, width)
        cut += int((share < 1.0 - 1e-12).sum())
        kept_mass = min(kept_mass, float(share.min()) if len(share) else 1.0)
        mean_mass += float(share.sum())
        cols[a : a + len(c)], weights[a : a + len(c)] = c, w
    used = int((cols >= 0).sum(1).max()) if n else 0  # no wider than the fullest row
    cols, weights = cols[:, :used], weights[:, :used]
    record = {"steps": steps, "keep": width, "width": used, "rows_cut": cut,
              "kept_mass_mean": round(mean_mass / max(n, 1), 6), "kept_mass_min": round(kept_mass, 6)}
    return torch.from_numpy(cols), torch.from_numpy(weights), record
