"""Divergences between row-wise distributions given as log-probabilities (KL, JS, TV, Hellinger, chi2, f).

The parameterised families (alpha(a), mixture) are in families.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench.errors import IconBenchError
from icon_bench.hooks.specs import DISCOVERY_TASKS, hookimpl

NEG_INF = float("-inf")


class DivergenceError(IconBenchError, ValueError):
    """A divergence was configured or called wrongly."""


def _log_tiny(x: Tensor) -> float:
    return math.log(torch.finfo(x.dtype).tiny)


def _log_cap(x: Tensor) -> float:
    # Exponent at which unbounded terms (p^2 / q and kin) saturate instead of overflowing: half the
    # dtype's log-range, less the entry count, so sums over all entries stay finite and gradients
    # passed back through a kernel's 1 / q (e.g. the cluster kernel's log) do too.
    return 0.5 * math.log(torch.finfo(x.dtype).max) - math.log(max(x.numel(), 1)) - 2.0


class Divergence:
    """Base class: ``div(log_p, log_q) -> (N,)`` per-row D(p_i || q_i) from (N, M) log-probabilities.

    ``log_p`` and ``log_q`` may hold ``-inf`` (exact zeros); values and gradients stay finite.
    Subclasses implement :meth:`rows`; ``bound`` is the largest value D can take, or None.
    """

    name: str = ""
    bound: float | None = None
    #: f(0) of the generator, when finite: then, for a p that is a few positives with no uniform
    #: share, ``D_i = sum_{j in supp p_i} q f(p / q) + f(0) (1 - sum_{j in supp p_i} q)`` exactly,
    #: and q is needed only at p's support (the sparse-support path). None: no such form.
    f0: float | None = None
    #: Where loss discovery may use this divergence: {"tasks": [...], "params": {name: search range}}
    #: (tasks among hooks.specs.DISCOVERY_TASKS; ranges as a suite's tune space writes them). None: never
    #: drawn unless a suite's discover space names it with its ranges.
    discovery: dict[str, Any] | None = None

    def generator(self, t: np.ndarray) -> np.ndarray:
        """The generator f of D = sum_j q_j f(p_j / q_j), at ratios t > 0 (numpy; for figures and checks)."""
        raise NotImplementedError(f"divergence {self.name!r} does not state its generator f(t)")

    @property
    def has_pointwise(self) -> bool:
        """True when :meth:`pointwise` is implemented (the structured paths need it)."""
        return type(self).pointwise is not Divergence.pointwise

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """Elementwise terms ``q f(p / q)`` at entries with p > 0 (``log_p`` finite; ``log_q`` may be -inf).

        The row sum over all entries with p > 0, plus ``f0`` times the q mass where p = 0, is the
        divergence; the structured paths of :class:`~icon_bench.objective.ICon` add it up that way.
        """
        raise NotImplementedError

    def term_q(self, p: Tensor, q: Tensor) -> Tensor | None:
        """:meth:`pointwise` in probability space for p > 0 and q > 0 (broadcasting), or None.

        Optional: the fused row sums of a debiased p evaluate it on every entry of q, where a
        closed form saves the round trip through logs; None makes them use :meth:`pointwise`.
        It runs without autograd and may work in place on its own temporaries.
        """
        return None

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor | None:
        """The derivative of :meth:`term_q` in q, or None (then autograd differentiates it)."""
        return None

    def __call__(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        if not isinstance(log_p, Tensor) or not isinstance(log_q, Tensor):
            raise DivergenceError(f"divergence {self.name!r} takes two tensors of log-probabilities")
        if log_p.shape != log_q.shape or log_p.dim() < 1:
            raise DivergenceError(
                f"divergence {self.name!r}: log_p {tuple(log_p.shape)} and log_q {tuple(log_q.shape)} "
                "must have the same (N, M) shape"
            )
        return self.rows(log_p, log_q)

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _kl_rows(lp: Tensor, lq: Tensor) -> Tensor:
    """sum_j p (log p - log q) over p > 0; a q = 0 under p > 0 is read as q = dtype's tiny (finite)."""
    mp = lp > NEG_INF
    lq_s = torch.where(lq > NEG_INF, lq, _log_tiny(lq))
    # Sanitise before the product: torch.where alone leaves 0 * inf = NaN in the backward pass.
    lp_s = torch.where(mp, lp, 0.0)
    term = torch.where(mp, lp_s.exp() * (lp_s - lq_s), 0.0)
    return term.sum(-1)


class KL(Divergence):
    """Kullback-Leibler KL(p || q) = sum p log(p / q): I-Con's divergence."""

    name = "kl"
    f0 = 0.0
    discovery = {"tasks": DISCOVERY_TASKS, "params": {}}

    def generator(self, t: np.ndarray) -> np.ndarray:
        return t * np.log(t)

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return _kl_rows(log_p, log_q)

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        lq = torch.where(log_q > NEG_INF, log_q, _log_tiny(log_q))
        return log_p.exp() * (log_p - lq)

    # ICon's own KL paths never call these; a mixture with a KL part does (its fused debiased path).
    def term_q(self, p: Tensor, q: Tensor) -> Tensor:
        return torch.xlogy(p, p) - torch.log(q).mul_(p)

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor:
        return q.reciprocal().mul_(p).neg_()


class ReverseKL(Divergence):
    """Reverse Kullback-Leibler KL(q || p) = sum q log(q / p) (mode seeking)."""

    name = "reverse_kl"  # f(t) = -log t: f(0) is infinite, so no sparse-support form

    def generator(self, t: np.ndarray) -> np.ndarray:
        return -np.log(t)

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return _kl_rows(log_q, log_p)

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        mq = log_q > NEG_INF
        lq = torch.where(mq, log_q, 0.0)
        return torch.where(mq, lq.exp() * (lq - log_p), 0.0)


class JS(Divergence):
    """Jensen-Shannon (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2; bounded by log 2."""

    name = "js"
    bound = math.log(2.0)
    f0 = math.log(2.0) / 2.0
    discovery = {"tasks": DISCOVERY_TASKS, "params": {}}

    def generator(self, t: np.ndarray) -> np.ndarray:
        return 0.5 * (t * np.log(t) - (1.0 + t) * np.log((1.0 + t) / 2.0))

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        mq = log_q > NEG_INF
        lq = torch.where(mq, log_q, 0.0)
        lm = torch.logaddexp(log_p, torch.where(mq, lq, NEG_INF)) - math.log(2.0)
        t_q = torch.where(mq, lq.exp() * (lq - lm), 0.0)
        return 0.5 * (log_p.exp() * (log_p - lm) + t_q)

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        mp, mq = log_p > NEG_INF, log_q > NEG_INF
        lp = torch.where(mp, log_p, 0.0)
        lq = torch.where(mq, log_q, 0.0)
        # m > 0 wherever p or q is; where both are zero the entry is masked, and feeding logaddexp
        # finite values there keeps its backward free of exp(-inf - -inf) = NaN.
        none = ~(mp | mq)
        lm = torch.logaddexp(torch.where(mp | none, lp, NEG_INF), torch.where(mq | none, lq, NEG_INF))
        lm = lm - math.log(2.0)
        t_p = torch.where(mp, lp.exp() * (lp - lm), 0.0)
        t_q = torch.where(mq, lq.exp() * (lq - lm), 0.0)
        return 0.5 * (t_p + t_q).sum(-1)

    def term_q(self, p: Tensor, q: Tensor) -> Tensor:
        # With r = p / q and L = log(1 + r): (p + q)(log 2 - L) / 2 + p log r / 2, where p log r =
        # p log p - p log q and p is one value per row: two logs per entry, few passes.
        s = p + q
        log_q = torch.log(q)
        out = torch.log1p(q.reciprocal().mul_(p)).sub_(math.log(2.0)).mul_(s).neg_()
        return out.sub_(log_q.mul_(p)).add_(torch.xlogy(p, p)).mul_(0.5)

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor:
        # log(2q / (p + q)) / 2 = (log 2 - log(1 + p / q)) / 2
        return torch.log1p(q.reciprocal().mul_(p)).sub_(math.log(2.0)).mul_(-0.5)


class TV(Divergence):
    """Total variation sum |p - q| / 2; bounded by 1."""

    name = "tv"
    bound = 1.0
    f0 = 0.5
    discovery = {"tasks": DISCOVERY_TASKS, "params": {}}

    def generator(self, t: np.ndarray) -> np.ndarray:
        return np.abs(t - 1.0) / 2.0

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return 0.5 * (log_p.exp() - log_q.exp()).abs()

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)

    def term_q(self, p: Tensor, q: Tensor) -> Tensor:
        return (q - p).abs_().mul_(0.5)

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor:
        return torch.sign(q - p).mul_(0.5)


class Hellinger(Divergence):
    """Squared Hellinger sum (sqrt p - sqrt q)^2 / 2 = 1 - sum sqrt(p q); bounded by 1."""

    name = "hellinger"
    bound = 1.0
    f0 = 0.5
    discovery = {"tasks": DISCOVERY_TASKS, "params": {}}

    def generator(self, t: np.ndarray) -> np.ndarray:
        return (np.sqrt(t) - 1.0) ** 2 / 2.0

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return 0.5 * ((0.5 * log_p).exp() - (0.5 * log_q).exp()).pow(2)

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        # The difference form is exact near p = q, where 1 - sum sqrt(pq) cancels.
        return 0.5 * ((0.5 * log_p).exp() - (0.5 * log_q).exp()).pow(2).sum(-1)

    def term_q(self, p: Tensor, q: Tensor) -> Tensor:
        return torch.sqrt(q).sub_(torch.sqrt(p)).square_().mul_(0.5)

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor:
        return torch.rsqrt(q).mul_(-0.5 * torch.sqrt(p)).add_(0.5)  # (1 - sqrt(p / q)) / 2


class Chi2(Divergence):
    """Pearson chi-squared sum (p - q)^2 / q; terms p^2 / q saturate (near sqrt of the dtype's max) to stay finite."""

    name = "chi2"
    f0 = 1.0
    discovery = {"tasks": DISCOVERY_TASKS, "params": {}}

    def generator(self, t: np.ndarray) -> np.ndarray:
        return (t - 1.0) ** 2

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        lq = torch.where(log_q > NEG_INF, log_q, _log_tiny(log_q))
        ratio = (2.0 * log_p - lq).clamp(max=_log_cap(log_q)).exp()
        return ratio - 2.0 * log_p.exp() + log_q.exp()

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        mp, mq = log_p > NEG_INF, log_q > NEG_INF
        lp = torch.where(mp, log_p, 0.0)
        lq = torch.where(mq, log_q, _log_tiny(log_q))
        # (p - q)^2 / q = p^2 / q - 2p + q, with p^2 / q taken in log space.
        ratio = torch.where(mp, (2.0 * lp - lq).clamp(max=_log_cap(log_q)).exp(), 0.0)
        return (ratio - 2.0 * log_p.exp() + log_q.exp()).sum(-1)


class FDivergence(Divergence):
    """A generic f-divergence sum_j q_j f(p_j / q_j) for a convex generator f with f(1) = 0.

    ``f`` maps a tensor of ratios t > 0 to a tensor; it is only ever called on finite, positive t.
    Conventions that keep every term finite (T = sqrt of the dtype's largest value):

    - p = 0 and q = 0: the term is 0 (0 f(0/0) = 0).
    - p = 0 < q: the term is q f(tiny), tiny the dtype's smallest normal (q f(0+) where f(0) is finite).
    - q = 0 < p, or p / q > T: the term is p f(T) / T, the value of q f(p / q) at ratio T. This is
      the limit p lim f(t)/t for generators of linear growth (TV, JS, Hellinger: exact) and a large
      finite stand-in for the infinite value of faster-growing ones (KL: p log T; chi2: about p T).
    """

    def __init__(
        self, f: Callable[[Tensor], Tensor], name: str = "f", bound: float | None = None, f0: float | str | None = "auto"
    ) -> None:
        if not callable(f):
            raise DivergenceError(f"FDivergence needs a callable generator f(t), got {f!r}")
        self.f = f
        self.name = name
        self.bound = bound
        self.f0 = _limit_at_zero(f) if f0 == "auto" else None if f0 is None else float(f0)

    def generator(self, t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.f(torch.as_tensor(t, dtype=torch.float64)).numpy()

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return self.rows(log_p.unsqueeze(-1), log_q.unsqueeze(-1))  # rows of one entry each

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        mp, mq = log_p > NEG_INF, log_q > NEG_INF
        lo = _log_tiny(log_q)
        hi = 0.5 * math.log(torch.finfo(log_q.dtype).max)
        lp = torch.where(mp, log_p, lo)
        lq = torch.where(mq, log_q, lo)
        ratio = lp - lq
        capped = (mp & ~mq) | (ratio > hi)
        top = torch.tensor(hi, dtype=log_q.dtype, device=log_q.device).exp()
        at_cap = lp.exp() * (self.f(top) / top)
        term = torch.where(capped, at_cap, lq.exp() * self.f(ratio.clamp(lo, hi).exp()))
        return torch.where(mp | mq, term, 0.0).sum(-1)


def _limit_at_zero(f: Callable[[Tensor], Tensor]) -> float | None:
    """f(0+) when the generator settles to a finite value near 0 (in float64), else None.

    A generator is only promised finite positive arguments, so f is read at 1e-300 and 1e-200:
    a finite limit (t log t, |t - 1| / 2, ...) gives two values within 1e-9; an infinite one
    (-log t, 1 / t) gives values that differ or overflow.
    """
    try:
        with torch.no_grad():
            a, b = (float(f(torch.tensor(t, dtype=torch.float64))) for t in (1e-300, 1e-200))
    except Exception:  # a generator that cannot be read there has no usable f(0)
        return None
    if math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(1.0, abs(a)):
        return a
    return None


@hookimpl
def register_divergences(register: Callable[..., None]) -> None:
    register("kl", KL)
    register("reverse_kl", ReverseKL)
    register("js", JS, aliases=("jsd", "jensen_shannon"))
    register("tv", TV, aliases=("total_variation",))
    register("hellinger", Hellinger)
    register("chi2", Chi2)
