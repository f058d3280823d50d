"""Kernels built from other kernels: debias, propagate (random walk) and mix."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from icon_bench.loss.kernel import Kernel, KernelError, _as_kernel
from icon_bench.loss.structure import (
    NEG_INF,
    Batch,
    RowBlocks,
    SparseRows,
    _allowed,
    _get,
    _log_of,
    _merge,
    log_normalise,
    safe_logsumexp,
)


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

    @property
    def supports_entries(self) -> bool:
        return self.kernel.supports_entries

    @property
    def supports_heads(self) -> bool:
        return bool(getattr(self.kernel, "supports_heads", False))

    @property
    def has_uniform_share(self) -> bool:
        return self.alpha > 0.0 or self.kernel.has_uniform_share

    def _allowed_count(self, batch: Batch, key: str) -> int:
        x = _get(batch, key, "debias")
        n = x.shape[-2] if x.dim() == 3 and key == "embeddings" else x.shape[0]
        return n - 1 if self.exclude_self and not self.rectangular else n

    def log_prob_at(self, batch: Batch, key: str, cols: Tensor) -> Tensor | None:
        lq = self.kernel.log_prob_at(batch, key, cols)
        if lq is None or self.alpha == 0.0:
            return lq
        log_u = math.log(self.alpha / max(self._allowed_count(batch, key), 1))
        mixed = torch.logaddexp(math.log1p(-self.alpha) + lq, torch.full_like(lq, log_u)) if self.alpha < 1.0 else torch.full_like(lq, log_u)
        return torch.where(cols >= 0, mixed, NEG_INF)

    def log_q_sums(
        self, batch: Batch, key: str, cols: Tensor, keep: float = 1.0, add: float = 0.0, block_elements: int = 1 << 24,
        matmul_dtype: Any = None, term: Any = None,
    ) -> tuple[Tensor, Tensor] | None:
        # keep * ((1 - alpha) q + alpha / S) + add: the inner kernel's sums with new constants.
        share = self.alpha / max(self._allowed_count(batch, key), 1)
        return self.kernel.log_q_sums(
            batch, key, cols, keep * (1.0 - self.alpha), keep * share + add, block_elements, matmul_dtype, term
        )

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
        return SparseRows(s.cols, s.log_w + log_keep, uniform, s.num_cols, s.exclude_self, has_uniform=True)

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
        if s.has_uniform:
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
        return SparseRows(tc, log_w, torch.zeros_like(s.uniform), s.num_cols, s.exclude_self, has_uniform=False)


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
    def has_uniform_share(self) -> bool:
        return any(m.has_uniform_share for m in self.members)

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
        has_uniform = any(p.has_uniform for p in parts)  # type: ignore[union-attr]
        return SparseRows(tc, _log_of(tw).masked_fill(tc < 0, NEG_INF), uniform, first.num_cols, self.exclude_self, has_uniform)  # type: ignore[arg-type,union-attr]

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
