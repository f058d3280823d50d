"""The Renyi divergence of order alpha, per row, in log space."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icon_bench.loss import KL, Divergence, DivergenceError

NEG_INF = float("-inf")

#: Below this |alpha - 1| the expm1 form is used: the logsumexp form loses every digit to cancellation.
_NEAR_ONE = 0.1


class Renyi(Divergence):
    """Renyi divergence D_alpha(p || q) = log(sum p^alpha q^(1 - alpha)) / (alpha - 1); KL at alpha -> 1.

    Zeros in p contribute nothing (their terms are dropped before any product, so no 0 * log 0 and
    no NaN gradient); a zero in q under p > 0 is read as the dtype's smallest normal number, which
    keeps alpha > 1 finite (large) instead of infinite, as the built-in divergences do. Rows where p
    has no support give 0 (ICon drops them anyway).
    """

    name = "renyi"
    bound = None  # unbounded for every alpha > 0: q can be as small as it likes where p is not
    # Loss discovery may draw it for every task, its order between 1/2 and 2 (the same declaration the
    # built-in divergences make; `icon-bench discover` reads it, never a list of names).
    discovery = {"tasks": ("clustering", "representation", "2d"), "params": {"alpha": {"uniform": [0.5, 2.0]}}}

    def __init__(self, alpha: float = 2.0) -> None:
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha <= 0.0:
            raise DivergenceError(f"renyi divergence: alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = alpha

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        a = self.alpha
        if a == 1.0:
            return KL().rows(log_p, log_q)
        mp = log_p > NEG_INF
        supported = mp.any(dim=-1)
        lp = torch.where(mp, log_p, 0.0)
        lq = torch.where(log_q > NEG_INF, log_q, math.log(torch.finfo(log_q.dtype).tiny))
        if abs(a - 1.0) < _NEAR_ONE:
            # log sum_j p_j exp((a - 1)(log p_j - log q_j)) = log1p(sum_j p_j expm1(...)): exact near a = 1,
            # where it tends to (a - 1) KL; |(a - 1)(log p - log q)| <= 0.1 * 708 keeps expm1 finite.
            s = torch.where(mp, lp.exp() * torch.expm1((a - 1.0) * (lp - lq)), 0.0).sum(dim=-1)
            log_sum = torch.log1p(s)
        else:
            terms = torch.where(mp, a * lp + (1.0 - a) * lq, NEG_INF)
            # A row without support would be logsumexp(all -inf): -inf with a NaN gradient.
            terms = torch.where(supported[..., None], terms, 0.0)
            log_sum = torch.logsumexp(terms, dim=-1)
        return torch.where(supported, log_sum / (a - 1.0), 0.0)

    def __repr__(self) -> str:
        return f"Renyi(alpha={self.alpha})"


def renyi(alpha: float = 2.0) -> Renyi:
    """Renyi divergence of order alpha: log(sum p^alpha q^(1-alpha)) / (alpha - 1); KL at alpha = 1."""
    return Renyi(alpha)

