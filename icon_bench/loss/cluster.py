"""Kernels over classes or clusters: soft cluster assignments and class prototypes."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from icon_bench.loss.entries import entry_dots
from icon_bench.loss.kernel import Kernel, KernelError, _positive
from icon_bench.loss.structure import (
    NEG_INF,
    Batch,
    RowBlocks,
    _get,
    _mask_self,
    _vectors,
    log_normalise,
)


class Cluster(Kernel):
    """Cluster kernel sum_c phi_ic phi_jc / sum_k phi_kc with phi = softmax(cluster logits); self excluded."""

    discovery = {"q": {"tasks": ("clustering",), "params": {}}}

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

    # -- structured forms: q at listed columns and fused row sums, O(N K C) and O(N C) memory ----
    supports_entries = True  # type: ignore[assignment]
    #: Embeddings may carry a leading heads dimension, (H, N, C): every head in one pass.
    supports_heads = True

    def _parts(self, batch: Batch, key: str) -> tuple[Tensor, Tensor, Tensor]:
        """phi = softmax(logits), d = 1 / n_c (..., 1, C) and each row's normaliser z_i = sum_{j allowed} s_ij."""
        logits = _get(batch, key, "cluster")
        logits = logits if logits.dim() == 3 else _vectors(logits)
        phi = torch.softmax(logits, -1)
        n_c = phi.sum(-2, keepdim=True)
        d = 1.0 / n_c.clamp_min(torch.finfo(phi.dtype).tiny)
        # z_i = sum_j s_ij = sum_c phi_ic, less s_ii = sum_c phi_ic^2 / n_c without self. The
        # difference is taken in float64: for a point nearly alone in its cluster, s_ii is near 1.
        # The dense kernel floors every s_ij at eps^2 before normalising; z leaves that out, a
        # relative difference below N eps^2 (4e-11 at N = 4096 in float32).
        p64 = phi.double()
        z = p64.sum(-1)
        if self.exclude_self:
            z = z - (p64 * p64 * d.double()).sum(-1)
        return phi, d, z.to(phi.dtype)

    def log_prob_at(self, batch: Batch, key: str, cols: Tensor) -> Tensor:
        phi, d, z = self._parts(batch, key)
        # Only the listed entries, in chunks: never a (heads, N, K, C) block padded to the widest row.
        s = entry_dots(phi * d, phi, cols)
        lq = s.clamp_min(self.floor(phi.dtype)).log() - z.log().unsqueeze(-1)
        return torch.where(cols >= 0, lq, NEG_INF)

    def log_q_sums(
        self, batch: Batch, key: str, cols: Tensor, keep: float = 1.0, add: float = 0.0, block_elements: int = 1 << 24,
        matmul_dtype: Any = None, term: Any = None,
    ) -> tuple[Tensor, Tensor]:
        """(sum over each row's allowed columns of h(q_ij), log q at ``cols``) for q' = keep q + add;
        h = log unless ``term`` (a :mod:`icon_bench.loss.fused` row term) says otherwise."""
        from icon_bench.loss.fused import LogTerm, term_sum_rows

        term = term or LogTerm()
        phi, d, z = self._parts(batch, key)
        floor = self.floor(phi.dtype)
        c1 = keep / z
        total, t_at = term_sum_rows(phi, d, c1, cols.clamp(min=0), add, floor, block_elements, matmul_dtype, term)
        if self.exclude_self:
            total = total - term.at(c1 * (phi * phi * d).sum(-1).clamp_min(floor) + add)
        lq_at = torch.where(cols >= 0, torch.log(c1.unsqueeze(-1) * t_at + add), NEG_INF)
        return total, lq_at


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

    supports_entries = True  # type: ignore[assignment]

    def log_prob_at(self, batch: Batch, key: str, cols: Tensor) -> Tensor:
        rb = self.row_blocks(batch, key)  # (N, classes) is already the size of the problem
        lq = rb.block(0, rb.num_rows).gather(1, cols.clamp(min=0))
        return torch.where(cols >= 0, lq, NEG_INF)

