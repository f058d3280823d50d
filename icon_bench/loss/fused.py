"""Fused, chunked row sums of h_i(c1_i * max(s_ij, floor) + c2) with s = Phi D Phi^T (the cluster kernel).

The KL of a debiased p against a (debiased) cluster q needs, per row, the sum of log q over every
column, an N x N quantity, and q at p's listed columns (h = log, :class:`LogTerm`). Any other
pointwise divergence needs the sum of its term g(share_i, q_ij) over every column instead
(:class:`PointwiseTerm`), the share being p's uniform part. Autograd would keep several N x N
intermediates (the product, the clamp, the scale, the log) per block and spend three matrix
products. This Function makes one pass per block for both, keeps at most that block, and writes
the backward by hand. s is symmetric (s_ij = sum_c phi_ic phi_jc / n_c), so the gradient with
respect to phi is (G + G^T) Phi D: when the rows fit one block (kept from the forward), the whole
step costs two N x N x C products instead of three. More rows recompute each block in the backward
(memory O(block), not O(N^2)), at four products.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _block(w: Tensor, phi_t: Tensor, c1: Tensor, c2: float, floor: float, a: int, b: int) -> Tensor:
    """u = c1 * max(w phi^T, floor) + c2 for rows a..b in float32, in place on the product.

    w and phi_t may be bfloat16 (the product then runs on bf16 tensor cores, accumulating in
    float32); u and everything after it is float32.
    """
    u = torch.matmul(w[..., a:b, :], phi_t)
    u = u.float() if u.dtype != c1.dtype else u
    return u.clamp_min_(floor).mul_(c1[..., a:b, None]).add_(c2)


def _mm(x: Tensor, y: Tensor, dtype: torch.dtype) -> Tensor:
    """x @ y with both operands in `dtype`, the result in x's dtype."""
    out = torch.matmul(x.to(dtype), y.to(dtype))
    return out.to(x.dtype) if out.dtype != x.dtype else out


#: Rows per log in the forward pass: bounds its temporary to a few rows of N.
_LOG_ROWS = 256
#: Tile edge of the in-place G + G^T.
_TILE = 512


class LogTerm:
    """h(u) = log u: the cross term of the KL, whose derivative 1 / u has closed forms throughout."""

    def values(self, u: Tensor, a: int, b: int) -> Tensor:
        """sum_j h(u_ij) for the rows a..b of the block u (global row indices)."""
        return torch.log(u).sum(-1)

    def at(self, u: Tensor) -> Tensor:
        """h at single entries u (..., N): the self term subtracted afterwards."""
        return torch.log(u)

    def grad_s(self, u: Tensor, c1: Tensor, g: Tensor, c2: float, floor: float, a: int, b: int) -> tuple[Tensor, Tensor]:
        """(dL/ds for a block, dL/dc1 for its rows) from u = c1 max(s, floor) + c2 and dL/d(row sums).

        Works in place on u (the saved or recomputed block, not needed afterwards): one block of memory.
        A second backward through a kept block is refused by autograd's version check (retain_graph).
        """
        n = u.shape[-1]
        live = u > (c1 * floor + c2)[..., None]  # the clamp passes no gradient where s <= floor
        inv = u.reciprocal_()
        # d/dc1 sum_j log(c1 t_j + c2) = sum_j t_j / u_j = (n - c2 sum_j 1/u_j) / c1
        grad_c1 = g * (n - c2 * inv.sum(-1)) / c1
        return inv.mul_(live).mul_((g * c1)[..., None]), grad_c1  # d/ds_ij = c1 / u_ij


class PointwiseTerm:
    """h_i(u) = g(share_i, u): a divergence's pointwise term where p holds only its uniform share.

    ``div`` is the divergence: its closed forms in probability space (``term_q``, ``term_dq``) when
    it has them, else its log-space ``pointwise``, differentiated by autograd a few rows at a time
    inside the backward (so a plugin's divergence needs no hand-written derivative). Its backward
    holds h' beside the block (two blocks of memory, where the log's works in place in one).
    """

    def __init__(self, div: Any, log_share: Tensor) -> None:
        self.div = div
        self.log_share = log_share  # (N,): one value per row, the same for every head
        self.share = log_share.exp()

    def _h(self, share: Tensor, log_share: Tensor, u: Tensor) -> Tensor:
        value = self.div.term_q(share, u)
        return self.div.pointwise(log_share.expand_as(u), torch.log(u)) if value is None else value

    def values(self, u: Tensor, a: int, b: int) -> Tensor:
        return self._h(self.share[a:b, None], self.log_share[a:b, None], u).sum(-1)

    def at(self, u: Tensor) -> Tensor:
        # Under autograd (the self terms): the log-space form, as term_q may work in place.
        return self.div.pointwise(self.log_share.expand_as(u), torch.log(u))

    def _dh(self, u: Tensor, a: int, b: int) -> Tensor:
        dh = self.div.term_dq(self.share[a:b, None], u)
        if dh is not None:
            return dh
        with torch.enable_grad():
            x = u.detach().requires_grad_(True)
            return torch.autograd.grad(self.values(x, a, b).sum(), x)[0]

    def grad_s(self, u: Tensor, c1: Tensor, g: Tensor, c2: float, floor: float, a: int, b: int) -> tuple[Tensor, Tensor]:
        live = u > (c1 * floor + c2)[..., None]
        dh = torch.empty_like(u)
        for r in range(0, u.shape[-2], _LOG_ROWS):  # a few rows at a time: temporaries stay small
            e = min(r + _LOG_ROWS, u.shape[-2])
            dh[..., r:e, :] = self._dh(u[..., r:e, :], a + r, a + e)
        # d/dc1 sum_j h(c1 t_j + c2) = sum_j h'(u_j) t_j with t_j = (u_j - c2) / c1
        grad_c1 = g * (torch.linalg.vecdot(dh, u) - c2 * dh.sum(-1)) / c1
        return dh.mul_(live).mul_((g * c1)[..., None]), grad_c1


RowTerm = LogTerm | PointwiseTerm


def _symmetrise_(g: Tensor) -> Tensor:
    """g + g^T in place, tile pair by tile pair: no second N x N (a transposed view read whole is
    also three times slower than tiles)."""
    n = g.shape[-1]
    for i in range(0, n, _TILE):
        for j in range(i, n, _TILE):
            x, y = g[..., i : i + _TILE, j : j + _TILE], g[..., j : j + _TILE, i : i + _TILE]
            total = x + y.transpose(-1, -2)
            x.copy_(total)
            if j != i:
                y.copy_(total.transpose(-1, -2))
    return g


class _TermSumRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, phi: Tensor, d: Tensor, c1: Tensor, cols: Tensor, c2: float, floor: float, step: int,
        mm_dtype: torch.dtype, term: RowTerm,
    ) -> tuple[Tensor, Tensor]:
        rows = phi.shape[-2]
        w = (phi * d).to(mm_dtype)
        sums = phi.new_empty(phi.shape[:-1])
        t_at = phi.new_empty((*phi.shape[:-1], cols.shape[-1]))
        index = cols.expand(*phi.shape[:-2], *cols.shape)
        phi_t = phi.to(mm_dtype).transpose(-1, -2)
        saved = None
        for a in range(0, rows, step):
            b = min(a + step, rows)
            u = _block(w, phi_t, c1, c2, floor, a, b)
            # t = max(s, floor) at the listed columns, read back from u = c1 t + c2
            t_at[..., a:b, :] = (u.gather(-1, index[..., a:b, :]) - c2) / c1[..., a:b, None]
            for r in range(a, b, _LOG_ROWS):  # h a few rows at a time: no second block in memory
                e = min(r + _LOG_ROWS, b)
                sums[..., r:e] = term.values(u[..., r - a : e - a, :], r, e)
            if step >= rows:
                saved = u
        ctx.c2, ctx.floor, ctx.step, ctx.mm_dtype, ctx.term = c2, floor, step, mm_dtype, term
        ctx.save_for_backward(phi, d, c1, index, t_at, *([] if saved is None else [saved]))
        return sums, t_at

    @staticmethod
    def backward(ctx: Any, grad_sums: Tensor, grad_t: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        phi, d, c1, index, t_at, *saved = ctx.saved_tensors
        c2, floor, step, mm, term = ctx.c2, ctx.floor, ctx.step, ctx.mm_dtype, ctx.term
        rows = phi.shape[-2]
        w = (phi * d).to(mm)
        grad_t = torch.where(t_at > floor, grad_t, 0.0)
        grad_c1 = torch.empty_like(c1)
        if saved:  # one block, kept: M = (G + G^T) Phi in one product
            gs, grad_c1 = term.grad_s(saved[0], c1, grad_sums, c2, floor, 0, rows)
            gs.scatter_add_(-1, index, grad_t)  # the listed t are s itself
            m = _mm(_symmetrise_(gs), phi, mm)
        else:
            phi_t = phi.to(mm).transpose(-1, -2)
            m = torch.zeros_like(phi)
            for a in range(0, rows, step):
                b = min(a + step, rows)
                u = _block(w, phi_t, c1, c2, floor, a, b)
                gs, grad_c1[..., a:b] = term.grad_s(u, c1[..., a:b], grad_sums[..., a:b], c2, floor, a, b)
                gs.scatter_add_(-1, index[..., a:b, :], grad_t[..., a:b, :])
                m[..., a:b, :] += _mm(gs, phi, mm)
                m += _mm(gs.transpose(-1, -2), phi[..., a:b, :], mm)
        # s_ij = sum_c phi_ic d_c phi_jc: dL/dphi = M d, dL/dd_c = sum_i phi_ic (G Phi)_ic = half of phi . M
        grad_d = 0.5 * (phi * m).sum(-2, keepdim=True)
        return m * d, grad_d.reshape(d.shape) if d.dim() == grad_d.dim() else grad_d.sum(0), grad_c1, None, None, None, None, None, None


def term_sum_rows(
    phi: Tensor, d: Tensor, c1: Tensor, cols: Tensor, c2: float, floor: float, block_elements: int,
    matmul_dtype: torch.dtype | None = None, term: RowTerm | None = None,
) -> tuple[Tensor, Tensor]:
    """Row sums over all N columns of h(c1_i max(s_ij, floor) + c2) with s = (phi * d) phi^T and
    h = ``term`` (log when None): (..., N); and max(s_ij, floor) at ``cols`` (N, K), entries in [0, N): (..., N, K).

    phi: (..., N, C); d: (..., 1, C), the per-cluster weights 1 / n_c; c1: (..., N).
    ``block_elements`` bounds one block of rows x columns; rows that fit in one block keep it for
    the backward, more rows recompute each block there. ``matmul_dtype`` (e.g. torch.bfloat16)
    is the operand type of the N x N x C products; logs and reductions stay in phi's dtype.
    """
    step = max(1, block_elements // max(phi.shape[-2], 1))
    mm = phi.dtype if matmul_dtype is None else matmul_dtype
    return _TermSumRows.apply(phi, d, c1, cols, float(c2), float(floor), int(step), mm, term or LogTerm())
