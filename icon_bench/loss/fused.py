"""Fused, chunked row sums of log(c1_i * max(s_ij, floor) + c2) with s = Phi D Phi^T (the cluster kernel).

The KL of a debiased p against a (debiased) cluster q needs, per row, the sum of log q over every
column, an N x N quantity, and q at p's listed columns. Autograd would keep several N x N
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


def _grad_s(u: Tensor, c1: Tensor, g: Tensor, c2: float, floor: float, n: int) -> tuple[Tensor, Tensor]:
    """(dL/ds for a block, dL/dc1 for its rows) from u = c1 max(s, floor) + c2 and dL/d(row sums).

    Works in place on u (the saved or recomputed block, not needed afterwards): one block of memory.
    A second backward through a kept block is refused by autograd's version check (retain_graph).
    """
    live = u > (c1 * floor + c2)[..., None]  # the clamp passes no gradient where s <= floor
    inv = u.reciprocal_()
    # d/dc1 sum_j log(c1 t_j + c2) = sum_j t_j / u_j = (n - c2 sum_j 1/u_j) / c1
    grad_c1 = g * (n - c2 * inv.sum(-1)) / c1
    return inv.mul_(live).mul_((g * c1)[..., None]), grad_c1  # d/ds_ij = c1 / u_ij


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


class _LogSumRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, phi: Tensor, d: Tensor, c1: Tensor, cols: Tensor, c2: float, floor: float, step: int,
        mm_dtype: torch.dtype,
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
            for r in range(a, b, _LOG_ROWS):  # the log a few rows at a time: no second block in memory
                sums[..., r : min(r + _LOG_ROWS, b)] = torch.log(u[..., r - a : min(r + _LOG_ROWS, b) - a, :]).sum(-1)
            if step >= rows:
                saved = u
        ctx.c2, ctx.floor, ctx.step, ctx.mm_dtype = c2, floor, step, mm_dtype
        ctx.save_for_backward(phi, d, c1, index, t_at, *([] if saved is None else [saved]))
        return sums, t_at

    @staticmethod
    def backward(ctx: Any, grad_sums: Tensor, grad_t: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        phi, d, c1, index, t_at, *saved = ctx.saved_tensors
        c2, floor, step, mm = ctx.c2, ctx.floor, ctx.step, ctx.mm_dtype
        rows = phi.shape[-2]
        w = (phi * d).to(mm)
        grad_t = torch.where(t_at > floor, grad_t, 0.0)
        grad_c1 = torch.empty_like(c1)
        if saved:  # one block, kept: M = (G + G^T) Phi in one product
            gs, grad_c1 = _grad_s(saved[0], c1, grad_sums, c2, floor, rows)
            gs.scatter_add_(-1, index, grad_t)  # the listed t are s itself
            m = _mm(_symmetrise_(gs), phi, mm)
        else:
            phi_t = phi.to(mm).transpose(-1, -2)
            m = torch.zeros_like(phi)
            for a in range(0, rows, step):
                b = min(a + step, rows)
                u = _block(w, phi_t, c1, c2, floor, a, b)
                gs, grad_c1[..., a:b] = _grad_s(u, c1[..., a:b], grad_sums[..., a:b], c2, floor, rows)
                gs.scatter_add_(-1, index[..., a:b, :], grad_t[..., a:b, :])
                m[..., a:b, :] += _mm(gs, phi, mm)
                m += _mm(gs.transpose(-1, -2), phi[..., a:b, :], mm)
        # s_ij = sum_c phi_ic d_c phi_jc: dL/dphi = M d, dL/dd_c = sum_i phi_ic (G Phi)_ic = half of phi . M
        grad_d = 0.5 * (phi * m).sum(-2, keepdim=True)
        return m * d, grad_d.reshape(d.shape) if d.dim() == grad_d.dim() else grad_d.sum(0), grad_c1, None, None, None, None, None


def log_sum_rows(
    phi: Tensor, d: Tensor, c1: Tensor, cols: Tensor, c2: float, floor: float, block_elements: int,
    matmul_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Row sums over all N columns of log(c1_i max(s_ij, floor) + c2) with s = (phi * d) phi^T:
    (..., N); and max(s_ij, floor) at ``cols`` (N, K), entries in [0, N): (..., N, K).

    phi: (..., N, C); d: (..., 1, C), the per-cluster weights 1 / n_c; c1: (..., N).
    ``block_elements`` bounds one block of rows x columns; rows that fit in one block keep it for
    the backward, more rows recompute each block there. ``matmul_dtype`` (e.g. torch.bfloat16)
    is the operand type of the N x N x C products; logs and reductions stay in phi's dtype.
    """
    step = max(1, block_elements // max(phi.shape[-2], 1))
    mm = phi.dtype if matmul_dtype is None else matmul_dtype
    return _LogSumRows.apply(phi, d, c1, cols, float(c2), float(floor), int(step), mm)
