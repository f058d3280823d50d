"""Fast-path structure (`SparseRows`, `RowBlocks`) and the masking, normalising and packing helpers kernels share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from icon_bench.errors import DataError

NEG_INF = float("-inf")
Batch = dict[str, Tensor]


# --------------------------------------------------------------------------------------------
# structure for the fast path
# --------------------------------------------------------------------------------------------
@dataclass
class SparseRows:
    """A row-sparse p: weights at listed columns plus a uniform share over each row's allowed columns.

    ``p_ij = exp(log_w[i, k]) [j == cols[i, k]] + uniform[i] / S`` for allowed j, where the allowed
    columns are all ``num_cols`` of them, less the diagonal when ``exclude_self``, and S is their
    count. ``cols`` (N, K) int64 holds distinct columns per row with -1 as padding (``log_w`` is
    -inf there). Rows with support sum to 1; rows without (no column, no uniform share) are all zero.
    ``has_uniform`` says, without reading the tensor (a device sync), whether any row may have a
    uniform share; False lets the loss skip the all-columns pass. True (the default) is always safe.
    """

    cols: Tensor
    log_w: Tensor
    uniform: Tensor
    num_cols: int
    exclude_self: bool
    has_uniform: bool = True

    @property
    def num_allowed(self) -> int:
        return self.num_cols - 1 if self.exclude_self else self.num_cols

    @property
    def has_support(self) -> Tensor:
        return (self.cols >= 0).any(1) | (self.uniform > 0)

    def dense(self) -> Tensor:
        """The (N, num_cols) log-probabilities this structure stands for (the dense reference)."""
        n = self.cols.shape[0]
        valid = self.cols >= 0
        w = torch.where(valid, self.log_w, NEG_INF).exp()
        probs = torch.zeros(n, self.num_cols, dtype=w.dtype, device=w.device)
        probs.scatter_add_(1, self.cols.clamp(min=0), w)
        if self.has_uniform:
            allowed = _allowed(n, self.num_cols, 0, self.exclude_self, w.device)
            probs = probs + allowed * (self.uniform / self.num_allowed)[:, None]
        return torch.where(probs > 0, probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), NEG_INF)


@dataclass
class RowBlocks:
    """A q that can be evaluated a block of rows at a time: ``block(a, b) -> (b - a, num_cols)`` log-probs."""

    num_rows: int
    num_cols: int
    exclude_self: bool
    block: Callable[[int, int], Tensor]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _get(batch: Batch, key: str, who: str) -> Tensor:
    if not isinstance(batch, dict):
        raise DataError(f"kernel {who!r} takes a batch dict of tensors, got {type(batch).__name__}")
    if key not in batch:
        raise DataError(f"kernel {who!r} needs batch[{key!r}]; the batch has {sorted(batch)}")
    return batch[key]


def _vectors(x: Tensor) -> Tensor:
    """(N, ...) features as (N, D) floats."""
    x = x.reshape(x.shape[0], -1)
    return x if x.is_floating_point() else x.float()


def _float_dtype(batch: Batch) -> torch.dtype:
    """The dtype for kernels built from integer keys: that of the batch's float tensors."""
    for key in ("embeddings", "inputs"):
        t = batch.get(key)
        if isinstance(t, Tensor) and t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _allowed(rows: int, cols: int, start: int, exclude_self: bool, device: torch.device) -> Tensor:
    """Bool (rows, cols): the allowed columns of rows start..start+rows (all but self when excluded)."""
    mask = torch.ones(rows, cols, dtype=torch.bool, device=device)
    if exclude_self:
        r = torch.arange(max(0, min(rows, cols - start)), device=device)  # the rows whose self column exists
        mask[r, r + start] = False
    return mask


def _mask_self(x: Tensor, start: int) -> Tensor:
    return x.masked_fill(~_allowed(x.shape[0], x.shape[1], start, True, x.device), NEG_INF)


def safe_logsumexp(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """logsumexp that is -inf (with zero, not NaN, gradient) where every entry is -inf."""
    alive = (x > NEG_INF).any(dim, keepdim=True)
    lse = torch.logsumexp(torch.where(alive, x, 0.0), dim, keepdim=True)
    out = torch.where(alive, lse, NEG_INF)
    return out if keepdim else out.squeeze(dim)


def log_normalise(x: Tensor) -> Tensor:
    """Rows of log-weights to log-probabilities; rows with no finite entry stay all -inf."""
    return x - torch.where(torch.isfinite(lse := safe_logsumexp(x, -1, keepdim=True)), lse, 0.0)


def _log_of(probs: Tensor) -> Tensor:
    """log of nonnegative weights, -inf (with zero gradient) at exact zeros."""
    tiny = torch.finfo(probs.dtype).tiny
    return torch.where(probs > 0, probs.clamp_min(tiny).log(), NEG_INF)


def _sq_dist(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """(A, B) squared Euclidean or cosine (1 - cos) distances."""
    if metric == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min(0.0)


def _pair_dist(x: Tensor, cols: Tensor, metric: str) -> Tensor:
    """(N, K) distances from each row of x to its listed rows, in the same algebra as _sq_dist."""
    xj = x[cols]
    if metric == "cosine":
        xn = F.normalize(x, dim=1)
        return 1.0 - (xn[:, None, :] * xn[cols]).sum(-1)
    d = (x * x).sum(1)[:, None] + (xj * xj).sum(-1) - 2.0 * (x[:, None, :] * xj).sum(-1)
    return d.clamp_min(0.0)


def _block_rows(n: int, m: int, budget: int = 1 << 22) -> int:
    return max(1, min(n, budget // max(m, 1)))


def _pack(rows: Tensor, cols: Tensor, w: Tensor, n: int, k: int | None = None) -> tuple[Tensor, Tensor]:
    """COO entries (rows sorted) to padded (n, K) cols (-1 padding) and weights (0 padding).

    ``k``, when the caller knows a bound on the entries per row, fixes K without reading the
    counts back from the device (a host sync); else K is the largest count.
    """
    counts = torch.zeros(n, dtype=torch.long, device=rows.device).index_add_(0, rows, torch.ones_like(rows))
    if k is None:
        k = int(counts.max()) if counts.numel() and rows.numel() else 0
    out_c = torch.full((n, k), -1, dtype=torch.long, device=cols.device)
    out_w = torch.zeros(n, k, dtype=w.dtype, device=w.device)
    if rows.numel():
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rows.numel(), device=rows.device) - starts[rows]
        out_c[rows, slot] = cols
        out_w[rows, slot] = w
    return out_c, out_w


def _merge(cols: Tensor, w: Tensor, num_cols: int, drop_self: bool) -> tuple[Tensor, Tensor]:
    """Sum the weights of repeated columns per row (and drop the diagonal); returns padded (cols, w).

    Row by row on fixed shapes (a sort, a running count, a scatter): a row keeps at most the
    entries it came with, so the width stays that of ``cols`` and nothing is read back from the device.
    """
    n = cols.shape[0]
    keep = (cols >= 0) & (w > 0)
    if drop_self:
        keep &= cols != torch.arange(n, device=cols.device)[:, None]
    key, order = torch.where(keep, cols, num_cols).sort(dim=1, stable=True)  # dropped entries sort last
    wv = torch.where(keep, w, 0.0).gather(1, order)
    first = torch.ones_like(key, dtype=torch.bool)
    first[:, 1:] = key[:, 1:] != key[:, :-1]
    slot = torch.cumsum(first, 1) - 1  # each entry's place among its row's distinct columns
    out_w = torch.zeros_like(w).scatter_add_(1, slot, wv)
    out_c = torch.full_like(cols, num_cols).scatter_(1, slot, key)
    dropped = out_c >= num_cols
    return out_c.masked_fill(dropped, -1), out_w.masked_fill(dropped, 0.0)


def _uniform_rows(cols: Tensor, dtype: torch.dtype, num_cols: int, exclude_self: bool) -> SparseRows:
    """SparseRows with equal weight on each listed column of a row."""
    valid = cols >= 0
    count = valid.sum(1, keepdim=True).to(dtype)
    log_w = torch.where(valid, -count.clamp_min(1).log(), NEG_INF)
    uniform = torch.zeros(cols.shape[0], dtype=dtype, device=cols.device)
    return SparseRows(cols, log_w, uniform, num_cols, exclude_self, has_uniform=False)


def _same_key(keys: Tensor, exclude_self: bool, host: Tensor | None = None) -> Tensor:
    """For each row, the rows sharing its key: (N, G) int64 with -1 padding, G the largest group.

    G sizes the result, so it must be known on the host: read from ``host`` (the trainer's CPU
    copy of the keys, see :func:`_host_copy`) when given, so that a CUDA step does not wait for the
    device; else from the keys themselves (free on the CPU, a sync elsewhere).
    """
    n = keys.shape[0]
    order = torch.argsort(keys, stable=True)
    ordered = keys[order]
    new = torch.ones(n, dtype=torch.bool, device=keys.device)
    new[1:] = ordered[1:] != ordered[:-1]
    gid = torch.cumsum(new, 0) - 1  # the group of each sorted position, groups numbered in key order
    counts = torch.zeros(n, dtype=torch.long, device=keys.device).index_add_(0, gid, torch.ones_like(gid))
    if not n:
        width = 0
    elif host is not None:
        width = int(torch.unique(host.reshape(-1), return_counts=True)[1].max())
    else:
        width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    group = torch.empty_like(gid)
    group[order] = gid
    slot = torch.arange(width, device=keys.device)
    pos = starts[group][:, None] + slot
    cols = torch.where(slot < counts[group][:, None], order[pos.clamp(max=max(n - 1, 0))], -1)
    if exclude_self:
        cols = torch.where(cols == torch.arange(n, device=keys.device)[:, None], -1, cols)
    return cols


def _host_copy(batch: Batch, key: str) -> Tensor | None:
    """The trainer's CPU copy ``batch["host"][key]`` of a batch key, or None.

    Off the CPU the trainer draws a batch's indices on the host and passes them along, so the
    kernels can size p's support there without waiting for the device (see train/trainer.make_batch).
    """
    mirror = batch.get("host") if isinstance(batch, dict) else None
    t = mirror.get(key) if isinstance(mirror, dict) else None
    return t if isinstance(t, Tensor) else None
