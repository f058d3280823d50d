"""The I-Con loss: mean over rows of D(p(.|i) || q(.|i)), with structured paths for a sparse p and any f-divergence."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from icon_bench.loss import structured
from icon_bench.loss.divergences import KL, Divergence
from icon_bench.loss.kernel import Kernel, KernelError, _as_kernel
from icon_bench.loss.structure import NEG_INF, Batch, SparseRows
from icon_bench.loss.transforms import Debias, Propagate


def _as_divergence(spec: Any) -> Divergence:
    from icon_bench.hooks.registry import create_as

    return create_as("divergence", spec, Divergence)


class ICon(nn.Module):
    """I-Con loss ``mean_i D(p(.|i) || q(.|i))``; p reads ``batch["inputs"]``, q ``batch["embeddings"]``.

    ``p``, ``q`` and ``divergence`` are components or specs (``"name"``, ``("name", {...})``,
    ``{"name": ..., ...}``). ``p_propagate`` (steps) then ``p_debias`` (alpha) wrap p;
    ``q_debias`` wraps q. Rows without support in p are left out of the mean.

    ``fast``: "auto" takes a structured path whenever one applies (:meth:`fast_path_blocker` says
    why not), False always computes dense N x N log p and log q (the reference), True requires a
    structured path. With p as sparse positives (``p.sparse``) the paths are, cheapest first
    (see :mod:`icon_bench.loss.structured`): q only at p's support when p has no uniform share
    and the divergence has finite f(0) (``q.log_prob_at``); for a debiased p, the fused row sums
    of log q (KL) or of the divergence's term at p's share (the others) (``q.log_q_sums``);
    otherwise q one row block at a time (``q.row_blocks``), checkpointed under autograd so memory
    is one block of ``block_elements``.
    """

    #: Elements of one (rows x columns) block of q on the fast path; smaller means less memory.
    block_elements: int = 1 << 24
    #: The structured forms this loss may use, cheapest first (see icon_bench.structured):
    #: "entries" (q at p's support), "fused" (fused row sums of log q), "blocks" (q by row blocks),
    #: "softmax" (a dense p against a softmax q's logits, KL: t-SNE and SNE).
    #: Benchmarks set {"blocks"} to time the path that came before the other two.
    forms: frozenset[str] = frozenset({"entries", "fused", "blocks", "softmax"})
    #: Operand type of the fused path's N x N x C products: "auto" is bfloat16 on CUDA (tensor
    #: cores, float32 accumulation; logs and reductions stay float32) and the input's type elsewhere.
    matmul_dtype: Any = "auto"

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
        """Why no structured path can run ('' when one can): then the loss is computed dense."""
        div, p, q = self.divergence, self.p, self.q
        if not div.has_pointwise:
            return f"the divergence {div.name!r} has no pointwise form q f(p / q)"
        if not p.supports_sparse:
            return f"p ({type(p).__name__}) has no sparse-positives form"
        if not (q.supports_row_blocks or q.supports_entries):
            return f"q ({type(q).__name__}) can be evaluated neither at listed entries nor by row blocks"
        if p.exclude_self != q.exclude_self:
            return "p and q disagree on self-pairs (include_self)"
        if not p.has_uniform_share:
            if div.f0 is None:
                return (
                    f"the divergence {div.name!r} has f(0) = infinity, so a p with zeros needs all of q "
                    "and p (debias p, or choose a divergence with finite f(0))"
                )
        elif not q.supports_row_blocks:
            return f"p has a uniform share (debiased), which needs every column of q, and q ({type(q).__name__}) has no row blocks"
        return ""

    @property
    def uses_fast_path(self) -> bool:
        return self.fast is not False and not self.fast_path_blocker()

    @property
    def supports_heads(self) -> bool:
        """True when :meth:`rows_and_support` takes embeddings (H, N, C): all heads in one pass."""
        if not (self.uses_fast_path and getattr(self.q, "supports_heads", False)):
            return False
        if not self.p.has_uniform_share:
            return self.divergence.f0 is not None and "entries" in self.forms
        # Fused row sums take every head at once; a q without them goes block by block, head by head.
        return self.divergence.has_pointwise and "fused" in self.forms

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

        `p` is this batch's :meth:`prepare_p` when the caller already has it. Embeddings of shape
        (H, N, C) (when :attr:`supports_heads`) give values (H, N): every head in one pass.
        """
        log_p = self.prepare_p(batch) if p is None else p
        if isinstance(log_p, SparseRows):
            values = self._structured(batch, log_p)
            if values is not None:
                return torch.where(log_p.has_support, values, 0.0), log_p.has_support
            if self.fast is True:
                raise KernelError("ICon(fast=True): q gave neither entries nor row blocks for this batch")
            log_p = self.p(batch, key="inputs")
        if self._softmax_form_applies():
            logits = self.q.logits(batch, "embeddings")
            if logits.shape == log_p.shape and self.p.exclude_self == self.q.exclude_self:
                dp = self._dense_p(log_p)
                rows = structured.kl_dense_softmax(dp, logits, self.q.exclude_self)
                return torch.where(dp.support, rows, 0.0), dp.support
        log_q = self.q(batch, key="embeddings")
        if log_p.shape != log_q.shape:
            raise KernelError(
                f"ICon: p gives {tuple(log_p.shape)} but q gives {tuple(log_q.shape)}; class kernels "
                "(label to='classes') pair with class kernels (prototype)"
            )
        return self.divergence(log_p, log_q), (log_p > NEG_INF).any(1)

    def _softmax_form_applies(self) -> bool:
        return (
            self.fast is not False
            and type(self.divergence) is KL
            and "softmax" in self.forms
            and callable(getattr(self.q, "logits", None))
            and not self.q.rectangular
        )

    def _dense_p(self, log_p: Tensor) -> structured.DenseP:
        """log_p read once; again for free when this very tensor comes back (a cached full-batch p).

        Held by weak reference: a p made afresh each step is neither kept alive nor mistaken for another.
        """
        ref, version, value = getattr(self, "_dense_p_of", (None, -1, None))
        if ref is not None and ref() is log_p and version == log_p._version and not log_p.requires_grad:
            return value
        value = structured.DenseP.of(log_p)
        self._dense_p_of = (weakref.ref(log_p), log_p._version, value)
        return value

    def _structured(self, batch: Batch, sp: SparseRows) -> Tensor | None:
        """Rows from the cheapest structured form that applies to this batch, or None (go dense)."""
        div, q = self.divergence, self.q
        key = "embeddings"
        if not sp.has_uniform and div.f0 is not None and "entries" in self.forms:
            lq_at = q.log_prob_at(batch, key, sp.cols)
            if lq_at is not None:
                return structured.support_rows(div, sp, lq_at)
        if sp.has_uniform and "fused" in self.forms and div.has_pointwise:
            mm = self.matmul_dtype
            if mm == "auto":
                mm = torch.bfloat16 if batch[key].is_cuda else None
            if type(div) is KL:
                sums = q.log_q_sums(batch, key, sp.cols, block_elements=self.block_elements, matmul_dtype=mm)
                if sums is not None:
                    return structured.kl_uniform_rows(sp, sums[1], sums[0])
            else:
                term = structured.share_term(div, sp)
                sums = q.log_q_sums(batch, key, sp.cols, block_elements=self.block_elements, matmul_dtype=mm, term=term)
                if sums is not None:
                    return structured.uniform_rows(div, sp, sums[1], sums[0])
        if not sp.has_uniform and div.f0 is None:
            return None
        rb = q.row_blocks(batch, key) if "blocks" in self.forms else None
        if rb is None:
            return None
        n = sp.cols.shape[0]
        if rb.num_rows != n or rb.num_cols != sp.num_cols:
            raise KernelError(f"ICon: p has shape ({n}, {sp.num_cols}) but q has ({rb.num_rows}, {rb.num_cols})")
        step = max(1, self.block_elements // max(rb.num_cols, 1))
        if type(div) is KL:
            return structured.kl_block_rows(sp, rb, step)
        return structured.block_rows(div, sp, rb, step)

    def rows(self, batch: Batch) -> Tensor:
        """Per-row divergences (N,); NaN for rows where p has no support."""
        values, support = self.rows_and_support(batch)
        return torch.where(support, values, torch.nan)

    def forward(self, batch: Batch, p: SparseRows | Tensor | None = None) -> Tensor:
        """The mean divergence over rows with support; `p` as in :meth:`rows_and_support`."""
        values, support = self.rows_and_support(batch, p)
        return self.mean_over_support(values, support)

    def mean_over_support(self, values: Tensor, support: Tensor) -> Tensor:
        """Mean of (..., N) row values over the rows with support: (...,)."""
        count = support.sum()
        # int(count) waits for the device; on CUDA an empty batch instead gives 0/0 = NaN, which
        # the trainer's periodic finite check reports (naming this cause) without a per-step sync.
        if values.device.type == "cpu" and int(count) == 0:
            raise KernelError(
                f"ICon: no row of p ({type(self.p).__name__}) has support in this batch (e.g. no "
                "other view, label or neighbour of any row in it); use bigger batches or another p"
            )
        return torch.where(support, values, 0.0).sum(-1) / count
