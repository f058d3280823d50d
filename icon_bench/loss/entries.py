"""Dot products of row pairs at listed entries (a sampled dense-dense product), chunked, with a hand-written backward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: Elements (heads x entries x features) one chunk of gathered rows may hold: 16 MB of float32.
CHUNK_ELEMENTS = 1 << 22


class _EntryDots(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, cols: Tensor, chunk_elements: int) -> Tensor:  # type: ignore[override]
        rows, slots = (cols >= 0).nonzero(as_tuple=True)
        targets = cols[rows, slots]
        lead = a.shape[:-2]
        out = a.new_zeros((*lead, *cols.shape))
        step = _step(a, chunk_elements)
        for s in range(0, rows.numel(), step):
            r, c, k = rows[s : s + step], targets[s : s + step], slots[s : s + step]
            out[..., r, k] = torch.linalg.vecdot(a.index_select(-2, r), b.index_select(-2, c))
        ctx.save_for_backward(a, b, rows, slots, targets)
        ctx.step = step
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a, b, rows, slots, targets = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[:2]
        ga = torch.zeros_like(a) if need_a else None
        gb = torch.zeros_like(b) if need_b else None
        for s in range(0, rows.numel(), ctx.step):
            r, c, k = rows[s : s + ctx.step], targets[s : s + ctx.step], slots[s : s + ctx.step]
            g = grad[..., r, k].unsqueeze(-1)
            if ga is not None:
                ga.index_add_(-2, r, g * b.index_select(-2, c))
            if gb is not None:
                gb.index_add_(-2, c, g * a.index_select(-2, r))
        return ga, gb, None, None


def _step(a: Tensor, chunk_elements: int) -> int:
    heads = a[..., 0, 0].numel() if a.dim() > 2 else 1
    return max(1, chunk_elements // max(1, heads * a.shape[-1]))


def entry_dots(a: Tensor, b: Tensor, cols: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """``out[..., i, k] = a[..., i, :] . b[..., cols[i, k], :]`` for listed entries, 0 at padding (-1).

    a, b: (..., N, C) (the same leading heads dimensions); cols: (N, K) int64 with -1 padding.
    Only the listed entries are gathered, ``chunk_elements`` elements at a time, so memory is
    O(heads x N x K) for the result plus one chunk, whatever the widest row (a gather padded to
    K rows of C features per row held heads x N x K x C). Gradients flow to a and b.
    """
    return _EntryDots.apply(a, b, cols, int(chunk_elements))
