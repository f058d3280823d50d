"""Kernels from a neighbourhood structure: uniform, same label, same sample (views), kNN graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from icon_bench.errors import DataError
from icon_bench.loss.kernel import Kernel, KernelError, _check_metric
from icon_bench.loss.structure import (
    NEG_INF,
    Batch,
    RowBlocks,
    SparseRows,
    _allowed,
    _block_rows,
    _float_dtype,
    _get,
    _host_copy,
    _mask_self,
    _same_key,
    _sq_dist,
    _uniform_rows,
    _vectors,
    log_normalise,
)


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

    has_uniform_share = True  # type: ignore[assignment]

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

    def _classes(self, y: Tensor, batch: Batch) -> int:
        # Checked on the host copy when there is one: no wait for the device.
        host = _host_copy(batch, "labels")
        y = y if host is None else host.reshape(-1)
        c = self.num_classes if self.num_classes is not None else int(y.max()) + 1 if y.numel() else 1
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            raise DataError(f"kernel 'label': labels must lie in [0, {c}), got [{int(y.min())}, {int(y.max())}]")
        return c

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        y = self._labels(batch)
        dtype = _float_dtype(batch)
        if self.rectangular:
            hit = F.one_hot(y, self._classes(y, batch)).bool()
        else:
            hit = y[:, None] == y[None, :]
            if self.exclude_self:
                hit &= _allowed(len(y), len(y), 0, True, y.device)
        return log_normalise(torch.where(hit, 0.0, NEG_INF).to(dtype))

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        y = self._labels(batch)
        dtype = _float_dtype(batch)
        if self.rectangular:
            c = self._classes(y, batch)
            return SparseRows(
                y[:, None], torch.zeros(len(y), 1, dtype=dtype, device=y.device),
                torch.zeros(len(y), dtype=dtype, device=y.device), c, False, has_uniform=False,
            )
        host = _host_copy(batch, "labels")
        return _uniform_rows(_same_key(y, self.exclude_self, host), dtype, len(y), self.exclude_self)


class Augmentation(Kernel):
    """Views of one sample as positives: 1[index_i == index_j, i != j]."""

    discovery = {"p": {"tasks": ("representation",), "params": {}}}

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
        return _uniform_rows(_same_key(idx, True, _host_copy(batch, "index")), _float_dtype(batch), len(idx), True)


class KNN(Kernel):
    """1/k on the k nearest neighbours: in the batch (on batch[key]) or from a global graph (scope="graph").

    With ``batch["neighbor_weights"]`` (a propagated global graph, :mod:`icon_bench.data.propagate`)
    each row's listed columns are weighted by it instead of equally, and every column of the list
    is read (its width is the propagation's, not k).
    """

    discovery = {"p": {"tasks": ("clustering", "representation", "2d"), "params": {"k": {"randint": [3, 30]}}}}

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
            return self._graph_cols(batch)[0]
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

    def _graph_cols(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(N, W) batch columns of each row's graph neighbours and the slot of its list each came from."""
        idx = _get(batch, "index", "knn").reshape(-1).long()
        nb = _get(batch, "neighbors", "knn").long()
        n = idx.shape[0]
        if nb.dim() != 2 or nb.shape[0] != n:
            raise DataError(f"kernel 'knn': batch['neighbors'] must be (N, k) with N = {n}, got {tuple(nb.shape)}")
        width = nb.shape[1] if "neighbor_weights" in batch else self.k
        host_idx, host_nb = _host_copy(batch, "index"), _host_copy(batch, "neighbors")
        if host_idx is not None and host_nb is not None:
            # Built on the host, where reading its sizes costs nothing, and copied over without waiting.
            cols, slots = _graph_support(host_idx.reshape(-1).long(), host_nb.long()[:, :width])
            return cols.to(idx.device, non_blocking=True), slots.to(idx.device, non_blocking=True)
        return _graph_support(idx, nb[:, :width])

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows:
        weights = batch.get("neighbor_weights") if self.scope == "graph" else None
        if weights is None:
            cols = self.neighbours(batch, key)
            return _uniform_rows(cols, _float_dtype(batch), cols.shape[0], True)
        cols, slots = self._graph_cols(batch)
        dtype = _float_dtype(batch)
        w = torch.where(cols >= 0, weights.to(dtype).gather(1, slots.clamp(min=0)), 0.0)
        total = w.sum(1, keepdim=True)
        log_w = torch.where((cols >= 0) & (w > 0), (w / total.clamp_min(torch.finfo(dtype).tiny)).log(), NEG_INF)
        uniform = torch.zeros(cols.shape[0], dtype=dtype, device=cols.device)
        return SparseRows(cols, log_w, uniform, cols.shape[0], True, has_uniform=False)

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        if self.scope == "graph":
            # Independent of the sparse construction: each row's listed weight (1 each without
            # weights) on every batch column holding that dataset index, self left out, normalised.
            idx = _get(batch, "index", "knn").reshape(-1).long()
            weights = batch.get("neighbor_weights")
            nb = _get(batch, "neighbors", "knn").long()
            nb = nb if weights is not None else nb[:, : self.k]
            dtype = _float_dtype(batch)
            w = (torch.ones_like(nb, dtype=dtype) if weights is None else weights.to(dtype)) * (nb >= 0)
            if weights is None:  # a list that repeats a neighbour counts it once
                first = torch.ones_like(nb, dtype=torch.bool)
                first[:, 1:] = ~(nb[:, 1:, None] == nb[:, None, :-1]).tril().any(2)
                w = w * first
            p = torch.cat([
                ((nb[a : a + 256, :, None] == idx[None, None, :]) * w[a : a + 256, :, None]).sum(1)
                for a in range(0, len(idx), 256)
            ])
            p = p * _allowed(len(idx), len(idx), 0, True, idx.device)
            return log_normalise(torch.where(p > 0, p.log(), NEG_INF))
        return self.sparse(batch, key).dense()


def _graph_support(idx: Tensor, nb: Tensor) -> tuple[Tensor, Tensor]:
    """(N, W) batch columns listed by each row's graph neighbours ``nb`` (dataset indices), -1 padded,
    and the slot of ``nb``'s row each column came from (a weighted graph's weight is at that slot).

    W (and the repeats of one dataset index in the batch) are read from the tensors: on the CPU
    that is free; on a device it waits for it, so the kernel passes host copies when it has them.
    """
    n = idx.shape[0]
    order = torch.argsort(idx)
    sorted_idx = idx[order]
    lo = torch.searchsorted(sorted_idx, nb.contiguous())
    hi = torch.searchsorted(sorted_idx, nb.contiguous(), right=True)
    reps = int((hi - lo).max()) if nb.numel() else 0
    slot = torch.arange(reps, device=idx.device)
    pos = (lo[..., None] + slot).clamp(max=max(n - 1, 0))
    cols = torch.where(slot < (hi - lo)[..., None], order[pos], -1).reshape(n, -1)
    cols = torch.where(cols == torch.arange(n, device=idx.device)[:, None], -1, cols)
    source = torch.arange(nb.shape[1], device=idx.device)[None, :, None].expand(n, -1, max(reps, 0)).reshape(n, -1)
    # A graph row may repeat a neighbour: count each batch column once (its first slot).
    cols, order = cols.sort(dim=1, stable=True)
    source = source.gather(1, order)
    dup = torch.zeros_like(cols, dtype=torch.bool)
    dup[:, 1:] = (cols[:, 1:] == cols[:, :-1]) & (cols[:, 1:] >= 0)
    # Listed columns first, padding last, no wider than the fullest row: the loss reads q at
    # every slot, so padding is work (k x reps slots hold about a third of that, measured).
    cols, order = torch.where(dup, -1, cols).sort(dim=1, descending=True, stable=True)
    source = source.gather(1, order)
    width = int((cols >= 0).sum(1).max()) if cols.numel() else 0
    return cols[:, :width], source[:, :width]
