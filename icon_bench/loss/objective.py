"""The I-Con loss: mean over rows of D(p(.|i) || q(.|i)), with a structured fast path for sparse p and KL."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from icon_bench.loss.divergences import KL, Divergence
from icon_bench.loss.kernel import Kernel, KernelError, _as_kernel
from icon_bench.loss.structure import NEG_INF, Batch, RowBlocks, SparseRows, _allowed
from icon_bench.loss.transforms import Debias, Propagate


def _as_divergence(spec: Any) -> Divergence:
    from icon_bench.hooks.registry import create_as

    return create_as("divergence", spec, Divergence)


class ICon(nn.Module):
    """I-Con loss ``mean_i D(p(.|i) || q(.|i))``; p reads ``batch["inputs"]``, q ``batch["embeddings"]``.

    ``p``, ``q`` and ``divergence`` are components or specs (``"name"``, ``("name", {...})``,
    ``{"name": ..., ...}``). ``p_propagate`` (steps) then ``p_debias`` (alpha) wrap p;
    ``q_debias`` wraps q. ``fast``: "auto" uses the structured KL path when it applies (KL, a p with
    sparse structure, a q evaluable by row blocks), False always goes dense, True requires the fast
    path. Rows without support in p are left out of the mean.

    The fast path needs ``p.sparse(batch, "inputs") -> SparseRows`` (positives plus a uniform share)
    and ``q.row_blocks(batch, "embeddings") -> RowBlocks``; it computes ``sum_j p log p`` in closed
    form and ``sum_j p log q`` from q at the positives plus the sum of log q over each row, one block
    of ``block_elements // M`` rows at a time (checkpointed under autograd, so memory is one block).
    """

    #: Elements of one (rows x columns) block of q on the fast path; smaller means less memory.
    block_elements: int = 1 << 24

    def __init__(
        self,
        p: Any,
        q: Any,
        divergence: Any = "kl",
        *,
        p_debias: float = 0.0,
        q_debias: float = 0.0,
        p_propagate: int = 0,
        fast: bool | str = "auto",
    ) -> None:
        super().__init__()
        if fast not in ("auto", True, False):
            raise KernelError(f"ICon: fast must be 'auto', True or False, got {fast!r}")
        if int(p_propagate) < 0:
            raise KernelError(f"ICon: p_propagate must be >= 0 steps, got {p_propagate!r}")
        p_kernel = _as_kernel(p)
        if int(p_propagate) > 0:
            p_kernel = Propagate(p_kernel, steps=int(p_propagate))
        if float(p_debias) > 0:
            p_kernel = Debias(p_kernel, float(p_debias))
        q_kernel = _as_kernel(q)
        if float(q_debias) > 0:
            q_kernel = Debias(q_kernel, float(q_debias))
        self.p: Kernel = p_kernel
        self.q: Kernel = q_kernel
        self.divergence = _as_divergence(divergence)
        if self.p.rectangular != self.q.rectangular:
            raise KernelError(
                f"ICon: p ({type(self.p).__name__}) and q ({type(self.q).__name__}) must both be over batch "
                "points or both over classes (label to='classes' pairs with prototype)"
            )
        self.fast = fast
        if fast is True:
            reason = self.fast_path_blocker()
            if reason:
                raise KernelError(f"ICon(fast=True): the structured path does not apply: {reason}")

    def fast_path_blocker(self) -> str:
        """Why the structured KL path cannot run ('' when it can)."""
        if type(self.divergence) is not KL:
            return f"the divergence is {self.divergence.name!r}, the fast path computes only 'kl'"
        if not self.p.supports_sparse:
            return f"p ({type(self.p).__name__}) has no sparse-positives form"
        if not self.q.supports_row_blocks:
            return f"q ({type(self.q).__name__}) cannot be evaluated by row blocks"
        if self.p.exclude_self != self.q.exclude_self:
            return "p and q disagree on self-pairs (include_self)"
        return ""

    @property
    def uses_fast_path(self) -> bool:
        return self.fast is not False and not self.fast_path_blocker()

    # ------------------------------------------------------------------------------------------
    def prepare_p(self, batch: Batch) -> SparseRows | Tensor:
        """p for this batch: SparseRows on the fast path, else the dense log p.

        p reads only the batch's inputs (and index, neighbours), never the embeddings, so losses
        over several heads of one batch compute it once and pass it to :meth:`rows_and_support`.
        """
        if self.uses_fast_path:
            sp = self.p.sparse(batch, "inputs")
            if sp is not None:
                return sp
            if self.fast is True:
                raise KernelError("ICon(fast=True): p gave no sparse structure for this batch")
        return self.p(batch, key="inputs")

    def rows_and_support(self, batch: Batch, p: SparseRows | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-row divergences (N,) and a bool mask (N,) of rows where p has support.

        `p` is this batch's :meth:`prepare_p` when the caller already has it.
        """
        log_p = self.prepare_p(batch) if p is None else p
        if isinstance(log_p, SparseRows):
            rb = self.q.row_blocks(batch, "embeddings")
            if rb is not None:
                return self._kl_structured(log_p, rb)
            if self.fast is True:
                raise KernelError("ICon(fast=True): q gave no row blocks for this batch")
            log_p = self.p(batch, key="inputs")
        log_q = self.q(batch, key="embeddings")
        if log_p.shape != log_q.shape:
            raise KernelError(
                f"ICon: p gives {tuple(log_p.shape)} but q gives {tuple(log_q.shape)}; class kernels "
                "(label to='classes') pair with class kernels (prototype)"
            )
        return self.divergence(log_p, log_q), (log_p > NEG_INF).any(1)

    def rows(self, batch: Batch) -> Tensor:
        """Per-row divergences (N,); NaN for rows where p has no support."""
        values, support = self.rows_and_support(batch)
        return torch.where(support, values, torch.nan)

    def forward(self, batch: Batch, p: SparseRows | Tensor | None = None) -> Tensor:
        """The mean divergence over rows with support; `p` as in :meth:`rows_and_support`."""
        values, support = self.rows_and_support(batch, p)
        count = support.sum()
        # int(count) waits for the device; on CUDA an empty batch instead gives 0/0 = NaN, which
        # the trainer's periodic finite check reports (naming this cause) without a per-step sync.
        if values.device.type == "cpu" and int(count) == 0:
            raise KernelError(
                f"ICon: no row of p ({type(self.p).__name__}) has support in this batch (e.g. no "
                "other view, label or neighbour of any row in it); use bigger batches or another p"
            )
        return torch.where(support, values, 0.0).sum() / count

    # ------------------------------------------------------------------------------------------
    def _kl_structured(self, sp: SparseRows, rb: RowBlocks) -> tuple[Tensor, Tensor]:
        """KL rows without the dense p: sum_j p log p in closed form, cross term from q row blocks."""
        n = sp.cols.shape[0]
        if rb.num_rows != n or rb.num_cols != sp.num_cols:
            raise KernelError(
                f"ICon: p has shape ({n}, {sp.num_cols}) but q has ({rb.num_rows}, {rb.num_cols})"
            )
        valid = sp.cols >= 0
        cols = sp.cols.clamp(min=0)
        w = torch.where(valid, sp.log_w, NEG_INF).exp()
        share = sp.uniform / max(sp.num_allowed, 1)  # p mass of each allowed column from the uniform part
        p_at = torch.where(valid, w + share[:, None], 0.0)
        # sum_j p_ij log p_ij: listed columns, plus the (S - K_i) columns that get only the share.
        others = sp.num_allowed - valid.sum(1)
        neg_entropy = torch.xlogy(p_at, p_at).sum(1) + others * torch.xlogy(share, share)
        need_all = bool((share > 0).any())
        log_tiny = math.log(torch.finfo(w.dtype).tiny)

        def cross(a: int, b: int, *_: Tensor) -> Tensor:
            # sum_j p_ij log q_ij = sum_k w_ik log q_ik + share_i * sum_{j allowed} log q_ij
            lq = rb.block(a, b)
            lq = torch.where(lq > NEG_INF, lq, log_tiny)  # same finite reading of q = 0 as the dense KL
            out = (w[a:b] * lq.gather(1, cols[a:b])).sum(1)
            if need_all:
                allowed = _allowed(b - a, rb.num_cols, a, sp.exclude_self, lq.device)
                out = out + share[a:b] * torch.where(allowed, lq, 0.0).sum(1)
            return out

        step = max(1, self.block_elements // max(rb.num_cols, 1))
        spans = [(a, min(a + step, n)) for a in range(0, n, step)]
        if len(spans) > 1 and torch.is_grad_enabled():
            # Recompute each block in backward, so autograd holds one block, not N x N.
            parts = [checkpoint(cross, a, b, use_reentrant=False) for a, b in spans]
        else:
            parts = [cross(a, b) for a, b in spans]
        values = neg_entropy - torch.cat(parts) if parts else neg_entropy
        support = sp.has_support
        return torch.where(support, values, 0.0), support
