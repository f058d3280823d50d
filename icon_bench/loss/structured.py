"""The structured paths of the I-Con loss: divergence rows from a sparse p without an N x N p.

Five forms, each equal to the dense computation (tests pin value and gradient):

- ``support_rows``: p is a few positives with no uniform share and D has a finite f(0). Then
  ``D_i = sum_{j in supp p_i} q f(p / q) + f(0) (1 - sum_{j in supp p_i} q)``: q is needed only
  at p's support (and each row's normaliser, which the kernel folds into ``log_prob_at``).
- ``kl_uniform_rows``: KL with a uniform share in p (a debiased p). ``sum_j p log p`` is closed
  form; the cross term needs log q at the positives plus the sum of log q over each row, which
  kernels with a fused form (the cluster kernel) give without holding an N x N block.
- ``uniform_rows``: any other pointwise divergence with a uniform share in p, the same way: the
  fused sum over each row of the term g(share, q) that every column would have if p held only
  its share, then the listed columns' terms swapped for those of their full p.
- ``block_rows``: any divergence with a pointwise form, q by row blocks (checkpointed under
  autograd, so memory is one block). The uniform share is one pass over each block.
- ``kl_dense_softmax``: a dense p (t-SNE's calibrated Gaussian) against a softmax q given by its
  logits s: ``KL_i = sum_j p log p - sum_j p_ij s_ij + logsumexp_j s_ij``, without forming log q.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from icon_bench.loss.divergences import Divergence
from icon_bench.loss.fused import PointwiseTerm
from icon_bench.loss.structure import NEG_INF, RowBlocks, SparseRows


def _log_tiny(x: Tensor) -> float:
    return math.log(torch.finfo(x.dtype).tiny)


def _listed(sp: SparseRows) -> tuple[Tensor, Tensor, Tensor]:
    """valid (N, K), p's weights at the listed columns (N, K) and the uniform share per column (N,)."""
    valid = sp.cols >= 0
    w = torch.where(valid, sp.log_w, NEG_INF).exp()
    return valid, w, _share(sp)


def _share(sp: SparseRows) -> Tensor:
    """The uniform share of p on each column of a row (N,)."""
    return sp.uniform / max(sp.num_allowed, 1)


def _log_p_at(valid: Tensor, w: Tensor, share: Tensor) -> Tensor:
    """log p at the listed columns (weight plus share; 0 at padding), a zero p read as the dtype's tiny."""
    return torch.where(valid, (w + share[:, None]).clamp_min(torch.finfo(w.dtype).tiny).log(), 0.0)


def support_rows(div: Divergence, sp: SparseRows, log_q_at: Tensor) -> Tensor:
    """(..., N) divergences for a p without uniform share, from log q at p's listed columns (..., N, K)."""
    assert div.f0 is not None
    valid = sp.cols >= 0
    lp = torch.where(valid, sp.log_w, 0.0)
    lq = torch.where(valid, log_q_at, 0.0)  # padding read as q = 1, then masked: no NaN in backward
    values = torch.where(valid, div.pointwise(lp, lq), 0.0).sum(-1)
    if div.f0:
        mass = torch.where(valid, lq.exp(), 0.0).sum(-1)
        values = values + div.f0 * (1.0 - mass)
    return values


def _neg_entropy(sp: SparseRows, valid: Tensor, w: Tensor, share: Tensor) -> Tensor:
    """sum_j p_ij log p_ij: the listed columns, plus the (S - K_i) columns holding only the share."""
    p_at = torch.where(valid, w + share[:, None], 0.0)
    others = sp.num_allowed - valid.sum(1)
    return torch.xlogy(p_at, p_at).sum(1) + others * torch.xlogy(share, share)


def kl_uniform_rows(sp: SparseRows, log_q_at: Tensor, log_row_sum: Tensor) -> Tensor:
    """KL rows (..., N) for a p with a uniform share, from log q at p's columns and sum_j log q_ij."""
    valid, w, share = _listed(sp)
    lq = torch.where(log_q_at > NEG_INF, log_q_at, _log_tiny(log_q_at))  # the dense reading of q = 0
    cross = torch.where(valid, w * lq, 0.0).sum(-1) + share * log_row_sum
    return _neg_entropy(sp, valid, w, share) - cross


def _log_share(share: Tensor) -> Tensor:
    """log of each row's uniform share; a zero share is read as the dtype's tiny (as block_rows does)."""
    return share.clamp_min(torch.finfo(share.dtype).tiny).log()


def share_term(div: Divergence, sp: SparseRows) -> PointwiseTerm:
    """The fused row term g(share_i, q_ij) of a divergence for a p with a uniform share."""
    return PointwiseTerm(div, _log_share(_share(sp)))


def uniform_rows(div: Divergence, sp: SparseRows, log_q_at: Tensor, share_sum: Tensor) -> Tensor:
    """Rows (..., N) of a pointwise divergence for a p with a uniform share, from log q at p's
    columns and ``share_sum``, the sum over each row's allowed columns of g(share_i, q_ij): the
    listed columns then swap their share-only term for the term of their full p."""
    valid, w, share = _listed(sp)
    lp_at = _log_p_at(valid, w, share)
    lq_at = torch.where(valid, log_q_at, 0.0)
    lu = _log_share(share)[:, None].expand_as(lp_at)
    swap = torch.where(valid, div.pointwise(lp_at, lq_at) - div.pointwise(lu, lq_at), 0.0)
    return share_sum + swap.sum(-1)


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _map_blocks(fn: Callable[..., Tensor], n: int, step: int, *tensors: Tensor) -> Tensor:
    """fn(a, b, *tensors) over row blocks, concatenated; checkpointed when there are several blocks."""
    spans = _spans(n, step)
    if len(spans) > 1 and torch.is_grad_enabled():
        # Recompute each block in backward, so autograd holds one block, not N x N.
        parts = [checkpoint(fn, a, b, *tensors, use_reentrant=False) for a, b in spans]
    else:
        parts = [fn(a, b, *tensors) for a, b in spans]
    return torch.cat(parts)


def kl_block_rows(sp: SparseRows, rb: RowBlocks, step: int) -> Tensor:
    """KL rows without the dense p: sum_j p log p in closed form, cross term from q row blocks."""
    valid, w, share = _listed(sp)
    cols = sp.cols.clamp(min=0)

    def cross(a: int, b: int, *_: Tensor) -> Tensor:
        # sum_j p_ij log q_ij = sum_k w_ik log q_ik + share_i * sum_{j allowed} log q_ij
        lq = rb.block(a, b)
        lq = torch.where(lq > NEG_INF, lq, _log_tiny(lq))  # same finite reading of q = 0 as the dense KL
        out = (w[a:b] * lq.gather(1, cols[a:b])).sum(1)
        if sp.has_uniform:
            total = lq.sum(1)
            if sp.exclude_self:
                total = total - lq.diagonal(offset=a)
            out = out + share[a:b] * total
        return out

    return _neg_entropy(sp, valid, w, share) - _map_blocks(cross, sp.cols.shape[0], step)


def block_rows(div: Divergence, sp: SparseRows, rb: RowBlocks, step: int) -> Tensor:
    """Rows of any pointwise divergence, q one row block at a time; p never dense."""
    valid, w, share = _listed(sp)
    cols = sp.cols.clamp(min=0)
    lp_at = _log_p_at(valid, w, share)
    # Columns outside p's list hold the share alone; a zero share is read as the dtype's tiny.
    log_u = _log_share(share)
    f0 = div.f0

    def part(a: int, b: int, *_: Tensor) -> Tensor:
        lq = rb.block(a, b)
        v = valid[a:b]
        lq_at = torch.where(v, lq.gather(1, cols[a:b]), 0.0)
        at = torch.where(v, div.pointwise(lp_at[a:b], lq_at), 0.0)
        if not sp.has_uniform:
            assert f0 is not None
            return at.sum(1) + f0 * (1.0 - torch.where(v, lq_at.exp(), 0.0).sum(1))
        lu = log_u[a:b, None]
        if sp.exclude_self:
            # q is 0 on the diagonal, where unbounded terms (chi2's p^2 / q) saturate: read it as
            # q = 1 instead, so subtracting the self term afterwards cancels nothing large.
            lq = lq.clone()
            lq.diagonal(offset=a).fill_(0.0)
        full = div.pointwise(lu.expand_as(lq), lq)
        total = full.sum(1)
        if sp.exclude_self:
            total = total - full.diagonal(offset=a)
        base = torch.where(v, div.pointwise(lu.expand_as(lq_at), lq_at), 0.0)
        return total + (at - base).sum(1)

    return _map_blocks(part, sp.cols.shape[0], step)


@dataclass
class DenseP:
    """A dense p read once: probabilities, sum_j p log p and the rows with support."""

    p: Tensor
    neg_entropy: Tensor
    support: Tensor

    @staticmethod
    def of(log_p: Tensor) -> DenseP:
        mp = log_p > NEG_INF
        p = log_p.exp()
        return DenseP(p, torch.where(mp, p * torch.where(mp, log_p, 0.0), 0.0).sum(-1), mp.any(-1))


def kl_dense_softmax(dp: DenseP, logits: Tensor, exclude_self: bool) -> Tensor:
    """KL rows of a dense p against q = softmax(logits) over each row's allowed columns.

    About a third of the elementwise passes of the dense reference, which normalises log q first;
    the logits are finite, and p is 0 off its support (self included), so sum_j p_ij s_ij needs no mask.
    """
    cross = torch.einsum("ij,ij->i", dp.p, logits)
    if exclude_self:
        logits = logits.clone()
        logits.diagonal().fill_(NEG_INF)
    return dp.neg_entropy - cross + torch.logsumexp(logits, -1)
