"""Parameterised families of divergences: Amari's alpha(a), and `mixture`, the weighted sum of KL, JS, TV, Hellinger.

Loss discovery searches their parameters continuously (their `discovery` declarations).

`mixture`: any nonnegative combination of convex generators with f(1) = 0 is again one, so
``mixture(kl=w1, js=w2, tv=w3, hellinger=w4)`` is the f-divergence with generator
``f = sum_g w_g f_g / sum_g w_g``. Its corners are the four divergences Beyond I-Con compares by
hand, and loss discovery searches the weights continuously between them. Every member keeps what
the structured fast path needs: a pointwise form and a finite f(0) (the weighted mean of the
parts' f(0)), so a sparse p costs what it costs under any of the parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from icon_bench.hooks.specs import DISCOVERY_TASKS, hookimpl
from icon_bench.loss.divergences import (
    JS,
    KL,
    NEG_INF,
    TV,
    Divergence,
    DivergenceError,
    Hellinger,
    ReverseKL,
    _log_cap,
    _log_tiny,
)


class Alpha(Divergence):
    """Amari alpha-divergence (1 - sum p^a q^(1-a)) / (a (1 - a)); KL(p || q) at a = 1, KL(q || p) at a = 0."""

    name = "alpha"
    # a in (0, 1): a finite f(0) (the sparse-support form) and a bound; KL and reverse KL are the ends.
    discovery = {"tasks": DISCOVERY_TASKS, "params": {"a": {"uniform": [0.05, 0.95]}}}

    def __init__(self, a: float = 0.5) -> None:
        a = float(a)
        if not math.isfinite(a):
            raise DivergenceError(f"alpha divergence: a must be a finite number, got {a!r}")
        self.a = a
        self._end: Divergence | None = KL() if a == 1.0 else ReverseKL() if a == 0.0 else None
        self.bound = 1.0 / (a * (1.0 - a)) if 0.0 < a < 1.0 else None
        # q f(0) = q / a in Amari's form; a p = 0 under a <= 0 is an infinite term.
        self.f0 = self._end.f0 if self._end is not None else (1.0 / a if a > 0.0 else None)

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        if self._end is not None:
            return self._end.pointwise(log_p, log_q)
        a = self.a
        mq = log_q > NEG_INF
        lq = torch.where(mq, log_q, 0.0)
        if a > 1.0:
            lq = torch.where(mq, lq, _log_tiny(log_q))
        mixed = (a * log_p + (1.0 - a) * lq).clamp(max=_log_cap(log_q)).exp()
        if a < 1.0:
            mixed = torch.where(mq, mixed, 0.0)
        return (a * log_p.exp() + (1.0 - a) * log_q.exp() - mixed) / (a * (1.0 - a))

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        if self._end is not None:
            return self._end.rows(log_p, log_q)
        a = self.a
        mp, mq = log_p > NEG_INF, log_q > NEG_INF
        both = mp | mq
        lp = torch.where(both, log_p, 0.0)
        lq = torch.where(both, log_q, 0.0)
        # A zero raised to a negative power is infinite: read it as the dtype's tiny to stay finite.
        if a < 0.0:
            lp = torch.where(mp | ~both, lp, _log_tiny(log_p))
        if a > 1.0:
            lq = torch.where(mq | ~both, lq, _log_tiny(log_q))
        mixed = (a * lp + (1.0 - a) * lq).clamp(max=_log_cap(log_q)).exp()
        # Amari's form for positive measures; equal to the normalised one when rows sum to 1.
        term = a * log_p.exp() + (1.0 - a) * log_q.exp() - mixed
        term = torch.where(both, term, 0.0)
        return term.sum(-1) / (a * (1.0 - a))

    def term_q(self, p: Tensor, q: Tensor) -> Tensor | None:
        # (a p + (1 - a) q - p^a q^(1 - a)) / (a (1 - a)): the debiased-p fused path's closed form.
        if self._end is not None:
            return self._end.term_q(p, q)
        a = self.a
        mixed = torch.pow(p, a) * torch.pow(q, 1.0 - a)
        return (a * p + (1.0 - a) * q - mixed) / (a * (1.0 - a))

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor | None:
        if self._end is not None:
            return self._end.term_dq(p, q)
        a = self.a
        return (1.0 - torch.pow(p / q, a)) / a

    def generator(self, t: np.ndarray) -> np.ndarray:
        if self._end is not None:
            return self._end.generator(t)
        a = self.a
        return (a * t + (1.0 - a) - t**a) / (a * (1.0 - a))

    def __repr__(self) -> str:
        return f"Alpha(a={self.a})"


#: The parts of a mixture, in the order a label lists them.
PARTS: dict[str, type[Divergence]] = {"kl": KL, "js": JS, "tv": TV, "hellinger": Hellinger}


class Mixture(Divergence):
    """sum_g w_g D_g / sum_g w_g over g in {kl, js, tv, hellinger}; weights nonnegative, not all zero.

    A weight not given is 0 (``mixture(tv=1)`` is TV); with none given, the four weigh the same.
    """

    name = "mixture"
    # Log-uniform weights reach near each corner (one part dominant) and never all zero.
    discovery = {"tasks": DISCOVERY_TASKS, "params": {g: {"loguniform": [1.0e-3, 1.0]} for g in PARTS}}

    def __init__(self, kl: float | None = None, js: float | None = None, tv: float | None = None,
                 hellinger: float | None = None) -> None:
        given = {"kl": kl, "js": js, "tv": tv, "hellinger": hellinger}
        if all(value is None for value in given.values()):
            given = dict.fromkeys(given, 1.0)
        raw = {key: 0.0 if value is None else value for key, value in given.items()}
        for key, value in raw.items():
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise DivergenceError(f"divergence 'mixture': weight {key} must be a number >= 0, got {value!r}")
        total = float(sum(raw.values()))
        if total <= 0:
            raise DivergenceError("divergence 'mixture': give at least one positive weight (kl, js, tv, hellinger)")
        self.weights = {key: float(value) / total for key, value in raw.items() if value > 0}
        self.parts = {key: PARTS[key]() for key in self.weights}
        self.f0 = sum(w * self.parts[k].f0 for k, w in self.weights.items())
        bounds = [self.parts[k].bound for k in self.weights]
        self.bound = None if any(b is None for b in bounds) else sum(w * b for w, b in zip(self.weights.values(), bounds))

    def _sum(self, each: Callable[[Divergence], Tensor | np.ndarray | None]) -> Tensor | np.ndarray | None:
        total = None
        for key, weight in self.weights.items():
            value = each(self.parts[key])
            if value is None:
                return None
            total = weight * value if total is None else total + weight * value
        return total

    def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return self._sum(lambda d: d.rows(log_p, log_q))

    def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return self._sum(lambda d: d.pointwise(log_p, log_q))

    def term_q(self, p: Tensor, q: Tensor) -> Tensor | None:
        # Each part's term_q works on its own temporaries; None when a part (KL) has no closed form.
        return self._sum(lambda d: d.term_q(p, q))

    def term_dq(self, p: Tensor, q: Tensor) -> Tensor | None:
        return self._sum(lambda d: d.term_dq(p, q))

    def generator(self, t: np.ndarray) -> np.ndarray:
        return self._sum(lambda d: d.generator(t))

    def __repr__(self) -> str:
        return "Mixture(" + ", ".join(f"{k}={w:.3g}" for k, w in self.weights.items()) + ")"


@hookimpl
def register_divergences(register: Callable[..., None]) -> None:
    register("alpha", Alpha)
    register("mixture", Mixture, aliases=("f_mixture",))
