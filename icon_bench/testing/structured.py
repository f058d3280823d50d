"""The structured hooks of divergences and kernels against the dense reference, and the notice when a plugin has none.

ICon's structured paths (loss/objective.py) never build the N x N matrices: for a divergence they
add up `pointwise(log_p, log_q)` over p's support plus `f0` times q's mass off it, and, for a
debiased p, `term_q(p, q)` / `term_dq(p, q)` over every entry. A wrong hook trains a wrong loss
without any error (a deliberately wrong f0 moved a loss from 6.12 to 3.97), so each hook a
divergence declares is checked here against its own dense `rows`; a divergence or kernel without
them is told, as a `DensePathNotice` warning, that it runs on the dense path and what that costs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from icon_bench.testing.common import _fail

__all__ = ["DensePathNotice", "check_divergence_hooks", "notice_dense_kernel"]

#: Relative agreement asked of the structured forms in float64 (sums of a few dozen terms).
_TOL = 1e-6


class DensePathNotice(UserWarning):
    """A component without the structured hooks: correct, but trained on the slower dense path."""


def _structured_rows(div: Any, lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """What the structured paths compute: pointwise over p > 0, plus f0 x (q's mass where p = 0)."""
    support = torch.isfinite(lp)
    safe_p = torch.where(support, lp, torch.zeros_like(lp))
    terms = torch.where(support, div.pointwise(safe_p, lq), torch.zeros_like(lp))
    total = terms.sum(dim=1)
    if div.f0 is not None:
        off = torch.where(support, torch.zeros_like(lq), lq.exp()).sum(dim=1)
        total = total + float(div.f0) * off
    return total


def check_divergence_hooks(label: str, div: Any, cases: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """`pointwise` + `f0`, and `term_q` / `term_dq`, against `rows` on each case (float64 log-probabilities).

    Without f0 the pointwise sum is only the divergence where q has no mass off p's support, so
    then only such cases are compared. A divergence with neither hook gets a DensePathNotice.
    """
    if not getattr(div, "has_pointwise", False):
        warnings.warn(
            f"{label}: no pointwise() (and f0): ICon trains it on the dense path, "
            "building N x N matrices per batch (4.6x slower in one measurement; docs/plugins.md, "
            "'Structured hooks'). Correct, only slower.",
            DensePathNotice,
            stacklevel=3,
        )
        return
    for what, (lp, lq) in cases.items():
        lp, lq = lp.double(), lq.double()
        off_support = torch.where(torch.isfinite(lp), torch.zeros_like(lq), lq.exp()).sum(dim=1)
        if div.f0 is None and off_support.max().item() > 1e-12:
            continue
        dense = div(lp, lq).double()
        try:
            structured = _structured_rows(div, lp, lq)
        except Exception as exc:
            raise _fail(label, "pointwise runs", f"on {what}: {type(exc).__name__}: {exc}") from exc
        err = (structured - dense).abs().max().item()
        if not err <= _TOL * max(1.0, dense.abs().max().item()):
            hook = "pointwise + f0" if div.f0 is not None else "pointwise"
            raise _fail(label, f"{hook} equals rows", f"on {what}: the structured sum differs by {err:.3g} "
                        f"(f0 = {div.f0}); ICon would train a different loss")
    if div.f0 is None:
        warnings.warn(
            f"{label}: pointwise() but no f0: ICon uses the structured path only where p has "
            "full support, and the dense one for sparse p (augmentation, kNN, labels). docs/plugins.md, "
            "'Structured hooks'.",
            DensePathNotice,
            stacklevel=3,
        )
    _check_term_q(label, div, cases)


def _check_term_q(label: str, div: Any, cases: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """term_q(p, q) equals pointwise in probability space, and term_dq its derivative in q, where p, q > 0.

    term_q runs without autograd and may work in place on its temporaries (its contract), so its
    derivative is checked against a central difference.
    """
    lp, lq = (t.double() for t in next(iter(cases.values())))
    both = torch.isfinite(lp) & torch.isfinite(lq)
    p, q = lp.exp()[both], lq.exp()[both]
    with torch.no_grad():
        value = div.term_q(p.clone(), q.clone())
        if value is None:
            return
        expected = div.pointwise(p.log(), q.log())
        err = (value - expected).abs().max().item()
        if not err <= _TOL * max(1.0, expected.abs().max().item()):
            raise _fail(label, "term_q equals pointwise", f"differs by {err:.3g} where p, q > 0")
        slope = div.term_dq(p.clone(), q.clone())
        if slope is None:
            return
        h = 1e-6 * q
        numeric = (div.term_q(p.clone(), q + h) - div.term_q(p.clone(), q - h)) / (2 * h)
    err = (slope - numeric).abs().max().item()
    if not err <= 1e-4 * max(1.0, numeric.abs().max().item()):
        raise _fail(label, "term_dq is term_q's derivative in q", f"differs by {err:.3g}")


def notice_dense_kernel(label: str, kernel: Any) -> None:
    """A DensePathNotice for a kernel with neither structured form (p: `sparse`, q: `row_blocks`)."""
    if getattr(kernel, "supports_sparse", False) or getattr(kernel, "supports_row_blocks", False):
        return
    warnings.warn(
        f"{label}: neither sparse() (as p) nor row_blocks() (as q): ICon holds it as a dense N x N "
        "matrix per batch (memory O(N^2), no sparse-support sums); docs/plugins.md, 'Structured hooks'. "
        "Correct, only slower.",
        DensePathNotice,
        stacklevel=3,
    )
