"""Kernels: the row-wise neighbour distributions p(j|i) and q(j|i) of I-Con, plus debias/propagate/mix transforms."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icon_bench.errors import DataError, IconBenchError
from icon_bench.hooks.specs import hookimpl

NEG_INF = float("-inf")
Batch = dict[str, Tensor]


class KernelError(IconBenchError, ValueError):
    """A kernel (or the loss built from it) was configured or fed wrongly."""


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
    """

    cols: Tensor
    log_w: Tensor
    uniform: Tensor
    num_cols: int
    exclude_self: bool

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
        if bool((self.uniform > 0).any()):
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
        r = torch.arange(rows, device=device)
        c = r + start
        keep = c < cols
        mask[r[keep], c[keep]] = False
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


def _check_metric(metric: str, who: str) -> str:
    if metric not in ("euclidean", "cosine"):
        raise KernelError(f"kernel {who!r}: metric must be 'euclidean' or 'cosine', got {metric!r}")
    return metric


def _positive(value: float, what: str, who: str) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise KernelError(f"kernel {who!r}: {what} must be a positive number, got {value!r}")
    return value


def _block_rows(n: int, m: int, budget: int = 1 << 22) -> int:
    return max(1, min(n, budget // max(m, 1)))


def _pack(rows: Tensor, cols: Tensor, w: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """COO entries (rows sorted) to padded (n, K) cols (-1 padding) and weights (0 padding)."""
    counts = torch.bincount(rows, minlength=n)
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
    """Sum the weights of repeated columns per row (and drop the diagonal); returns padded (cols, w)."""
    n = cols.shape[0]
    rows = torch.arange(n, device=cols.device)[:, None].expand_as(cols)
    keep = (cols >= 0) & (w > 0)
    if drop_self:
        keep &= cols != rows
    keys = rows[keep] * num_cols + cols[keep]
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    summed = torch.zeros(uniq.numel(), dtype=w.dtype, device=w.device).scatter_add_(0, inverse, w[keep])
    return _pack(uniq // num_cols, uniq % num_cols, summed, n)


def _uniform_rows(cols: Tensor, dtype: torch.dtype, num_cols: int, exclude_self: bool) -> SparseRows:
    """SparseRows with equal weight on each listed column of a row."""
    valid = cols >= 0
    count = valid.sum(1, keepdim=True).to(dtype)
    log_w = torch.where(valid, -count.clamp_min(1).log(), NEG_INF)
    uniform = torch.zeros(cols.shape[0], dtype=dtype, device=cols.device)
    return SparseRows(cols, log_w, uniform, num_cols, exclude_self)


def _same_key(keys: Tensor, exclude_self: bool) -> Tensor:
    """For each row, the rows sharing its key: (N, G) int64 with -1 padding, G the largest group."""
    n = keys.shape[0]
    order = torch.argsort(keys, stable=True)
    _, counts = torch.unique_consecutive(keys[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.empty(n, dtype=torch.long, device=keys.device)
    group[order] = torch.repeat_interleave(torch.arange(counts.numel(), device=keys.device), counts)
    slot = torch.arange(int(counts.max()) if n else 0, device=keys.device)
    pos = starts[group][:, None] + slot
    cols = torch.where(slot < counts[group][:, None], order[pos.clamp(max=max(n - 1, 0))], -1)
    if exclude_self:
        cols = torch.where(cols == torch.arange(n, device=keys.device)[:, None], -1, cols)
    return cols


def _as_kernel(spec: Any) -> Kernel:
    from icon_bench.hooks.registry import create_as

    return create_as("kernel", spec, Kernel)


# --------------------------------------------------------------------------------------------
# base
# --------------------------------------------------------------------------------------------
class Kernel(nn.Module):
    """Base class: ``kernel(batch, key) -> (N, M)`` row-normalised log-probabilities, -inf for zeros.

    Square kernels (M = N, columns are batch rows) exclude the diagonal unless ``include_self``;
    rectangular ones (columns are classes) set ``rectangular = True``. A row with no support is all
    -inf. Optional fast-path structure: :meth:`sparse` (p side) and :meth:`row_blocks` (q side).
    """

    rectangular: bool = False
    include_self: bool = False

    @property
    def exclude_self(self) -> bool:
        return not self.rectangular and not self.include_self

    @property
    def supports_sparse(self) -> bool:
        """True when :meth:`sparse` returns a SparseRows (for any batch with the keys it reads)."""
        return False

    @property
    def supports_row_blocks(self) -> bool:
        """True when :meth:`row_blocks` returns a RowBlocks."""
        return False

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        rb = self.row_blocks(batch, key)
        if rb is not None:
            return rb.block(0, rb.num_rows)
        sp = self.sparse(batch, key)
        if sp is not None:
            return sp.dense()
        raise NotImplementedError(f"{type(self).__name__} must implement forward, sparse or row_blocks")

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows | None:
        """This kernel as sparse positives plus a uniform share, or None when it has no such form."""
        return None

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks | None:
        """This kernel evaluable one block of rows at a time (no N x N at once), or None."""
        return None


# --------------------------------------------------------------------------------------------
# kernels on features (softmax type)
# --------------------------------------------------------------------------------------------
class _Pairwise(Kernel):
    """Softmax over columns of logits s(x_i, x_j); subclasses give the logits for a block of rows."""

    supports_row_blocks = True  # type: ignore[assignment]

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Any) -> Tensor:
        raise NotImplementedError

    def _prepare(self, x: Tensor) -> Any:
        return None

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        x = _vectors(_get(batch, key, self._name))
        state = self._prepare(x)
        n = x.shape[0]

        def block(a: int, b: int) -> Tensor:
            s = self._logits(x[a:b], x, a, state)
            if self.exclude_self:
                s = _mask_self(s, a)
            return log_normalise(s)

        return RowBlocks(n, n, self.exclude_self, block)

    _name = ""


class Gaussian(_Pairwise):
    """Gaussian affinities exp(-d_ij / (2 sigma^2)), d squared Euclidean or 1 - cos; optional t-SNE perplexity."""

    _name = "gaussian"

    def __init__(
        self,
        sigma: float = 1.0,
        metric: str = "euclidean",
        perplexity: float | None = None,
        include_self: bool = False,
    ) -> None:
        super().__init__()
        self.sigma = _positive(sigma, "sigma", "gaussian")
        self.metric = _check_metric(metric, "gaussian")
        self.perplexity = None if perplexity is None else _positive(perplexity, "perplexity", "gaussian")
        if self.perplexity is not None and self.perplexity < 1:
            raise KernelError(f"kernel 'gaussian': perplexity must be at least 1, got {perplexity!r}")
        self.include_self = bool(include_self)

    def _prepare(self, x: Tensor) -> Tensor | None:
        if self.perplexity is None:
            return None
        return self.calibrate(x)

    @torch.no_grad()
    def calibrate(self, x: Tensor, iters: int = 64) -> Tensor:
        """Per-row precisions beta_i = 1 / (2 sigma_i^2) whose rows have the target perplexity (bisection)."""
        x = x.detach()
        n = x.shape[0]
        support = n - 1 if self.exclude_self else n
        assert self.perplexity is not None
        if self.perplexity > support:
            raise KernelError(
                f"kernel 'gaussian': perplexity {self.perplexity:g} needs rows of more than "
                f"{self.perplexity:g} points; this batch gives {support}"
            )
        target = math.log(self.perplexity)
        betas = torch.empty(n, dtype=x.dtype, device=x.device)
        for a in range(0, n, step := _block_rows(n, n)):
            d = _sq_dist(x[a : a + step], x, self.metric)
            if self.exclude_self:
                d = d.masked_fill(~_allowed(d.shape[0], n, a, True, d.device), float("inf"))
            finite = torch.where(torch.isfinite(d), d, torch.nan)
            scale = torch.nanmean(finite, 1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
            # Bisection on log(beta * mean distance): entropy falls monotonically as beta grows.
            lo = torch.full_like(scale, -30.0)
            hi = torch.full_like(scale, 30.0)
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                lp = torch.log_softmax(-(mid.exp() / scale) * d, 1)
                ent = -torch.where(lp > NEG_INF, lp.exp() * lp, 0.0).sum(1, keepdim=True)
                too_flat = ent > target
                lo = torch.where(too_flat, mid, lo)
                hi = torch.where(too_flat, hi, mid)
            betas[a : a + step] = (0.5 * (lo + hi)).exp().squeeze(1) / scale.squeeze(1)
        return betas

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Tensor | None) -> Tensor:
        d = _sq_dist(xa, x, self.metric)
        if state is None:
            return -d / (2.0 * self.sigma**2)
        return -state[a : a + xa.shape[0], None] * d


class StudentT(_Pairwise):
    """Student-t affinities (1 + d_ij / (scale * dof))^(-(dof + 1) / 2); dof = 1 is t-SNE's 1 / (1 + d)."""

    _name = "student_t"

    def __init__(
        self, dof: float = 1.0, scale: float = 1.0, metric: str = "euclidean", include_self: bool = False
    ) -> None:
        super().__init__()
        self.dof = _positive(dof, "dof", "student_t")
        self.scale = _positive(scale, "scale", "student_t")
        self.metric = _check_metric(metric, "student_t")
        self.include_self = bool(include_self)

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Any) -> Tensor:
        d = _sq_dist(xa, x, self.metric)
        return -0.5 * (self.dof + 1.0) * torch.log1p(d / (self.scale * self.dof))


class Cosine(_Pairwise):
    """InfoNCE softmax: proportional to exp(cos(z_i, z_j) / temperature)."""

    _name = "cosine"

    def __init__(self, temperature: float = 0.5, include_self: bool = False) -> None:
        super().__init__()
        self.temperature = _positive(temperature, "temperature", "cosine")
        self.include_self = bool(include_self)

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1)

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Tensor) -> Tensor:
        return state[a : a + xa.shape[0]] @ state.T / self.temperature


class Cluster(Kernel):
    """Cluster kernel sum_c phi_ic phi_jc / sum_k phi_kc with phi = softmax(cluster logits); self excluded."""

    def __init__(self, include_self: bool = False) -> None:
        super().__init__()
        self.include_self = bool(include_self)

    @property
    def supports_row_blocks(self) -> bool:
        return True

    @staticmethod
    def floor(dtype: torch.dtype) -> float:
        """The smallest q_ij the kernel gives before renormalising (eps^2 of the dtype)."""
        return torch.finfo(dtype).eps ** 2

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        logits = _vectors(_get(batch, key, "cluster"))
        phi = torch.softmax(logits, 1)
        weighted = phi / phi.sum(0).clamp_min(torch.finfo(phi.dtype).tiny)
        n = phi.shape[0]

        def block(a: int, b: int) -> Tensor:
            # Rows including self already sum to 1. q is floored at eps^2 of the dtype (float32:
            # 1.4e-14), like the eps of the reference implementation: heads confident on disjoint
            # clusters keep a finite log q, and the 1 / q of the log's gradient stays bounded.
            lq = (weighted[a:b] @ phi.T).clamp_min(self.floor(phi.dtype)).log()
            if self.exclude_self:
                lq = _mask_self(lq, a)
            return log_normalise(lq)

        return RowBlocks(n, n, self.exclude_self, block)


class Prototype(Kernel):
    """Data-to-class softmax(z_i . w_c / T) over classes with learnable prototypes w: gives cross-entropy."""

    rectangular = True

    def __init__(self, num_classes: int, dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        if int(num_classes) < 1 or int(dim) < 1:
            raise KernelError(f"kernel 'prototype': num_classes and dim must be >= 1, got {num_classes}, {dim}")
        self.temperature = _positive(temperature, "temperature", "prototype")
        self.weight = nn.Parameter(torch.randn(int(num_classes), int(dim)) / math.sqrt(int(dim)))

    @property
    def supports_row_blocks(self) -> bool:
        return True

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        z = _vectors(_get(batch, key, "prototype"))
        if z.shape[1] != self.weight.shape[1]:
            raise KernelError(
                f"kernel 'prototype': batch[{key!r}] has dimension {z.shape[1]}, prototypes have "
                f"dim={self.weight.shape[1]}"
            )
        w = self.weight.to(z.dtype)

        def block(a: int, b: int) -> Tensor:
            return torch.log_softmax(z[a:b] @ w.T / self.temperature, 1)

        return RowBlocks(z.shape[0], w.shape[0], False, block)


class Uniform(Kernel):
    """Uniform 1/M over each row's allowed columns (all but self)."""

    def __init__(self, include_self: bool = False) -> None:
        super().__init__()
        self.include_self = bool(include_self)

    @property
    def supports_sparse(self) -> bool:
        return True

    @property
    def supports_row_blocks(self) -> bool:
        return True

    def _n(self, batch: Batch, key: str) -> tuple[int, torch.device]:
        t = _get(batch, key, "uniform")
        return t.shape[0], t.device

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        n, device = self._n(batch, key)
        dtype = _float_dtype(batch)
        cols = torch.full((n, 0), -1, dtype=torch.long, device=device)
        uniform = torch.full((n,), 1.0 if n > int(self.exclude_self) else 0.0, dtype=dtype, device=device)
        return SparseRows(cols, torch.zeros(n, 0, dtype=dtype, device=device), uniform, n, self.exclude_self)

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        n, device = self._n(batch, key)
        dtype = _float_dtype(batch)

        def block(a: int, b: int) -> Tensor:
            zeros = torch.zeros(b - a, n, dtype=dtype, device=device)
            return log_normalise(_mask_self(zeros, a) if self.exclude_self else zeros)

        return RowBlocks(n, n, self.exclude_self, block)


# --------------------------------------------------------------------------------------------
# kernels from labels, views and neighbour graphs (sparse positives)
# --------------------------------------------------------------------------------------------
class Label(Kernel):
    """Labels as supervision: 1[y_i = y_j] over batch points, or one-hot over classes (to="classes")."""

    def __init__(self, to: str = "points", num_classes: int | None = None, include_self: bool = False) -> None:
        super().__init__()
        if to not in ("points", "classes"):
            raise KernelError(f"kernel 'label': to must be 'points' or 'classes', got {to!r}")
        if num_classes is not None and int(num_classes) < 1:
            raise KernelError(f"kernel 'label': num_classes must be >= 1, got {num_classes!r}")
        self.target = to  # not self.to: that would shadow nn.Module.to
        self.rectangular = to == "classes"
        self.num_classes = None if num_classes is None else int(num_classes)
        self.include_self = bool(include_self)

    @property
    def supports_sparse(self) -> bool:
        return True

    def _labels(self, batch: Batch) -> Tensor:
        y = _get(batch, "labels", "label").reshape(-1)
        if y.is_floating_point():
            raise DataError("kernel 'label': batch['labels'] must be integer class ids")
        return y.long()

    def _classes(self, y: Tensor) -> int:
        c = self.num_classes if self.num_classes is not None else int(y.max()) + 1 if y.numel() else 1
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            raise DataError(f"kernel 'label': labels must lie in [0, {c}), got [{int(y.min())}, {int(y.max())}]")
        return c

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        y = self._labels(batch)
        dtype = _float_dtype(batch)
        if self.rectangular:
            hit = F.one_hot(y, self._classes(y)).bool()
        else:
            hit = y[:, None] == y[None, :]
            if self.exclude_self:
                hit &= _allowed(len(y), len(y), 0, True, y.device)
        return log_normalise(torch.where(hit, 0.0, NEG_INF).to(dtype))

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        y = self._labels(batch)
        dtype = _float_dtype(batch)
        if self.rectangular:
            c = self._classes(y)
            return SparseRows(
                y[:, None], torch.zeros(len(y), 1, dtype=dtype, device=y.device),
                torch.zeros(len(y), dtype=dtype, device=y.device), c, False,
            )
        return _uniform_rows(_same_key(y, self.exclude_self), dtype, len(y), self.exclude_self)


class Augmentation(Kernel):
    """Views of one sample as positives: 1[index_i == index_j, i != j]."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def supports_sparse(self) -> bool:
        return True

    def _index(self, batch: Batch) -> Tensor:
        return _get(batch, "index", "augmentation").reshape(-1).long()

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        idx = self._index(batch)
        hit = (idx[:, None] == idx[None, :]) & _allowed(len(idx), len(idx), 0, True, idx.device)
        return log_normalise(torch.where(hit, 0.0, NEG_INF).to(_float_dtype(batch)))

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        idx = self._index(batch)
        return _uniform_rows(_same_key(idx, True), _float_dtype(batch), len(idx), True)


class KNN(Kernel):
    """1/k on the k nearest neighbours: in the batch (on batch[key]) or from a global graph (scope="graph")."""

    def __init__(self, k: int = 5, metric: str = "euclidean", scope: str = "batch") -> None:
        super().__init__()
        if int(k) < 1:
            raise KernelError(f"kernel 'knn': k must be >= 1, got {k!r}")
        if scope not in ("batch", "graph"):
            raise KernelError(f"kernel 'knn': scope must be 'batch' or 'graph', got {scope!r}")
        self.k = int(k)
        self.metric = _check_metric(metric, "knn")
        self.scope = scope

    @property
    def supports_sparse(self) -> bool:
        return True

    @torch.no_grad()
    def neighbours(self, batch: Batch, key: str = "embeddings") -> Tensor:
        """(N, K) batch columns of each row's neighbours, -1 padded (the kernel's support)."""
        if self.scope == "graph":
            return self._graph_cols(batch)
        x = _vectors(_get(batch, key, "knn")).detach()
        n = x.shape[0]
        k = min(self.k, n - 1)
        if k < 1:
            return torch.full((n, 0), -1, dtype=torch.long, device=x.device)
        out = []
        for a in range(0, n, step := _block_rows(n, n)):
            d = _sq_dist(x[a : a + step], x, self.metric)
            d = d.masked_fill(~_allowed(d.shape[0], n, a, True, d.device), float("inf"))
            out.append(torch.topk(d, k, dim=1, largest=False).indices)
        return torch.cat(out)

    def _graph_cols(self, batch: Batch) -> Tensor:
        idx = _get(batch, "index", "knn").reshape(-1).long()
        nb = _get(batch, "neighbors", "knn").long()
        n = idx.shape[0]
        if nb.dim() != 2 or nb.shape[0] != n:
            raise DataError(f"kernel 'knn': batch['neighbors'] must be (N, k) with N = {n}, got {tuple(nb.shape)}")
        nb = nb[:, : self.k]
        order = torch.argsort(idx)
        sorted_idx = idx[order]
        lo = torch.searchsorted(sorted_idx, nb.contiguous())
        hi = torch.searchsorted(sorted_idx, nb.contiguous(), right=True)
        reps = int((hi - lo).max()) if nb.numel() else 0
        slot = torch.arange(reps, device=idx.device)
        pos = (lo[..., None] + slot).clamp(max=max(n - 1, 0))
        cols = torch.where(slot < (hi - lo)[..., None], order[pos], -1).reshape(n, -1)
        cols = torch.where(cols == torch.arange(n, device=idx.device)[:, None], -1, cols)
        # A graph row may repeat a neighbour: count each batch column once.
        cols = cols.sort(1).values
        dup = torch.zeros_like(cols, dtype=torch.bool)
        dup[:, 1:] = (cols[:, 1:] == cols[:, :-1]) & (cols[:, 1:] >= 0)
        return torch.where(dup, -1, cols)

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        cols = self.neighbours(batch, key)
        return _uniform_rows(cols, _float_dtype(batch), cols.shape[0], True)

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        if self.scope == "graph":
            # Independent of the sparse construction: membership of each batch index in each row's list.
            idx = _get(batch, "index", "knn").reshape(-1).long()
            nb = _get(batch, "neighbors", "knn").long()[:, : self.k]
            hit = torch.cat([(nb[a : a + 256, :, None] == idx[None, None, :]).any(1) for a in range(0, len(idx), 256)])
            hit &= _allowed(len(idx), len(idx), 0, True, idx.device)
            return log_normalise(torch.where(hit, 0.0, NEG_INF).to(_float_dtype(batch)))
        return self.sparse(batch, key).dense()


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------
class _Wrapper(Kernel):
    kernel: Kernel

    @property  # type: ignore[override]
    def rectangular(self) -> bool:
        return self.kernel.rectangular

    @property  # type: ignore[override]
    def include_self(self) -> bool:
        return self.kernel.include_self

    @property
    def exclude_self(self) -> bool:
        return self.kernel.exclude_self


class Debias(_Wrapper):
    """Debiasing: (1 - alpha) p + alpha * uniform over each row's allowed columns (rows without support stay so)."""

    def __init__(self, kernel: Any, alpha: float = 0.5) -> None:
        super().__init__()
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise KernelError(f"debias: alpha must lie in [0, 1], got {alpha!r}")
        self.kernel = _as_kernel(kernel)
        self.alpha = alpha

    @property
    def supports_sparse(self) -> bool:
        return self.kernel.supports_sparse

    @property
    def supports_row_blocks(self) -> bool:
        return self.kernel.supports_row_blocks

    def _debias(self, lp: Tensor, start: int, num_cols: int) -> Tensor:
        if self.alpha == 0.0:
            return lp
        allowed = _allowed(lp.shape[0], num_cols, start, self.exclude_self, lp.device)
        alive = (lp > NEG_INF).any(1, keepdim=True)
        count = allowed.sum(1, keepdim=True).clamp_min(1).to(lp.dtype)
        log_u = math.log(self.alpha) - count.log()
        mixed = torch.logaddexp(math.log1p(-self.alpha) + lp, log_u) if self.alpha < 1.0 else log_u.expand_as(lp)
        return torch.where(allowed & alive, mixed, NEG_INF)

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        lp = self.kernel(batch, key)
        return self._debias(lp, 0, lp.shape[1])

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows | None:
        s = self.kernel.sparse(batch, key)
        if s is None or self.alpha == 0.0:
            return s
        log_keep = math.log1p(-self.alpha) if self.alpha < 1.0 else NEG_INF
        uniform = torch.where(s.has_support, (1.0 - self.alpha) * s.uniform + self.alpha, 0.0)
        return SparseRows(s.cols, s.log_w + log_keep, uniform, s.num_cols, s.exclude_self)

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks | None:
        rb = self.kernel.row_blocks(batch, key)
        if rb is None:
            return None
        return RowBlocks(rb.num_rows, rb.num_cols, rb.exclude_self, lambda a, b: self._debias(rb.block(a, b), a, rb.num_cols))


class Propagate(_Wrapper):
    """Propagation: P proportional to P + P^2 + ... + P^steps (walks on the neighbour graph), or binarised."""

    def __init__(self, kernel: Any, steps: int = 2, binarize: bool = False) -> None:
        super().__init__()
        if int(steps) < 1:
            raise KernelError(f"propagate: steps must be >= 1, got {steps!r}")
        self.kernel = _as_kernel(kernel)
        if self.kernel.rectangular:
            raise KernelError("propagate: needs a square kernel (columns are batch rows), not a class kernel")
        self.steps = int(steps)
        self.binarize = bool(binarize)

    @property
    def supports_sparse(self) -> bool:
        return self.kernel.supports_sparse

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        base = self.kernel(batch, key)
        probs = base.exp()
        power, total = probs, probs
        for _ in range(self.steps - 1):
            power = power @ probs
            total = total + power
        if self.exclude_self:
            total = total * _allowed(total.shape[0], total.shape[1], 0, True, total.device)
        if self.binarize:
            total = (total > 0).to(total.dtype)
        return log_normalise(_log_of(total))

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows | None:
        s = self.kernel.sparse(batch, key)
        if s is None:
            return None
        if bool((s.uniform > 0).any()):
            return None  # a uniform share makes P^2 dense: no structure left to exploit
        n = s.cols.shape[0]
        cols = s.cols
        w = torch.where(cols >= 0, s.log_w, NEG_INF).exp()
        power_c, power_w = cols, w
        all_c, all_w = [cols], [w]
        for _ in range(self.steps - 1):
            # (P^t P)_i = sum_k P^t_ik P_k: gather each listed column's row of P.
            safe = power_c.clamp(min=0)
            nc = cols[safe]
            nw = w[safe] * torch.where(power_c >= 0, power_w, 0.0)[..., None]
            power_c, power_w = _merge(nc.reshape(n, -1), nw.reshape(n, -1), s.num_cols, drop_self=False)
            all_c.append(power_c)
            all_w.append(power_w)
        tc, tw = _merge(torch.cat(all_c, 1), torch.cat(all_w, 1), s.num_cols, drop_self=self.exclude_self)
        if self.binarize:
            tw = (tc >= 0).to(tw.dtype)
        total = tw.sum(1, keepdim=True).clamp_min(torch.finfo(tw.dtype).tiny)
        log_w = torch.where(tc >= 0, _log_of(tw / total), NEG_INF)
        return SparseRows(tc, log_w, torch.zeros_like(s.uniform), s.num_cols, s.exclude_self)


class Mix(Kernel):
    """Weighted mixture sum_m w_m p_m / sum_m w_m of kernels' probabilities (e.g. augmentation + knn)."""

    def __init__(self, kernels: list, weights: list | None = None) -> None:
        super().__init__()
        if not kernels:
            raise KernelError("mix: needs at least one kernel")
        self.members = nn.ModuleList(_as_kernel(k) for k in kernels)
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or any(not (w > 0 and math.isfinite(w)) for w in weights):
            raise KernelError(f"mix: needs one positive weight per kernel, got {weights!r} for {len(self.members)}")
        if len({m.rectangular for m in self.members}) > 1:
            raise KernelError("mix: cannot mix square kernels (over points) with class kernels")
        self.weights = weights

    @property  # type: ignore[override]
    def rectangular(self) -> bool:
        return self.members[0].rectangular

    @property  # type: ignore[override]
    def include_self(self) -> bool:
        return any(m.include_self for m in self.members)

    @property
    def supports_sparse(self) -> bool:
        return all(m.supports_sparse for m in self.members)

    @property
    def supports_row_blocks(self) -> bool:
        return all(m.supports_row_blocks for m in self.members)

    def _combine(self, parts: list[Tensor]) -> Tensor:
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) > 1:
            raise KernelError(f"mix: members give different shapes {sorted(shapes)}")
        stacked = torch.stack([math.log(w) + p for w, p in zip(self.weights, parts)])
        # Each alive member row sums to 1, so renormalising rows divides by the alive weights.
        return log_normalise(safe_logsumexp(stacked, 0))

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        return self._combine([m(batch, key) for m in self.members])

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows | None:
        parts = [m.sparse(batch, key) for m in self.members]
        if any(p is None for p in parts):
            return None
        num_cols = {p.num_cols for p in parts}  # type: ignore[union-attr]
        if len(num_cols) > 1:
            raise KernelError(f"mix: members give different column counts {sorted(num_cols)}")
        alive = torch.stack([p.has_support.to(p.uniform.dtype) * w for p, w in zip(parts, self.weights)])  # type: ignore[union-attr]
        total = alive.sum(0)
        share = alive / total.clamp_min(torch.finfo(total.dtype).tiny)  # (members, N)
        cols = torch.cat([p.cols for p in parts], 1)  # type: ignore[union-attr]
        w = torch.cat(
            [torch.where(p.cols >= 0, p.log_w, NEG_INF).exp() * s[:, None] for p, s in zip(parts, share)], 1  # type: ignore[union-attr]
        )
        uniform = sum(p.uniform * s for p, s in zip(parts, share))  # type: ignore[union-attr]
        first = parts[0]
        tc, tw = _merge(cols, w, first.num_cols, drop_self=False)  # type: ignore[union-attr]
        return SparseRows(tc, _log_of(tw).masked_fill(tc < 0, NEG_INF), uniform, first.num_cols, self.exclude_self)  # type: ignore[arg-type,union-attr]

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks | None:
        blocks = [m.row_blocks(batch, key) for m in self.members]
        if any(b is None for b in blocks):
            return None
        first = blocks[0]
        assert first is not None
        return RowBlocks(
            first.num_rows, first.num_cols, self.exclude_self,
            lambda a, b: self._combine([rb.block(a, b) for rb in blocks]),  # type: ignore[union-attr]
        )


@hookimpl
def register_kernels(register: Callable[..., None]) -> None:
    register("gaussian", Gaussian)
    register("student_t", StudentT, aliases=("student-t", "cauchy"))
    register("cosine", Cosine)
    register("knn", KNN)
    register("label", Label)
    register("augmentation", Augmentation)
    register("cluster", Cluster)
    register("prototype", Prototype)
    register("uniform", Uniform)
    register("mix", Mix)
    register("debias", Debias)
    register("propagate", Propagate)
