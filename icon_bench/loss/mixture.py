"""`mixture`: a parameterised family of f-divergences, the normalised weighted sum of KL, JS, TV and Hellinger.

Any nonnegative combination of convex generators with f(1) = 0 is again one, so
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
from torch import Tensor

from icon_bench.hooks.specs import DISCOVERY_TASKS, hookimpl
from icon_bench.loss.divergences import JS, KL, TV, Divergence, DivergenceError, Hellinger

#: The parts, in the order a label lists them.
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
    register("mixture", Mixture, aliases=("f_mixture",))
