"""Generators f(t) of the built-in divergences and the `mixture` family, against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from icon_bench.hooks.registry import create
from icon_bench.loss.divergences import DivergenceError


def _rows(seed: int, n: int = 5, m: int = 7, zeros: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p, q = rng.random((n, m)), rng.random((n, m)) + 0.05
    if zeros:
        p[rng.random((n, m)) < 0.4] = 0.0
        p[:, 0] += 0.1
    return p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)


def _value(spec, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    div = create("divergence", spec)
    with np.errstate(divide="ignore"):
        lp, lq = torch.tensor(np.log(p)), torch.tensor(np.log(q))
    return div(lp, lq).numpy()


@pytest.mark.parametrize("spec", ["kl", "reverse_kl", "js", "tv", "hellinger", "chi2", {"name": "alpha", "a": 0.3},
                                  {"name": "alpha", "a": 0.8}, {"name": "mixture", "kl": 1, "tv": 2, "js": 0.5}])
def test_sum_q_f_of_p_over_q_is_the_divergence(spec) -> None:
    # The generator is the independent statement of the divergence: D = sum_j q_j f(p_j / q_j) for p, q > 0.
    p, q = _rows(0)
    f = create("divergence", spec).generator
    np.testing.assert_allclose((q * f(p / q)).sum(1), _value(spec, p, q), rtol=1e-9, atol=1e-12)


def test_generators_match_closed_forms_and_scipy() -> None:
    t = np.array([0.25, 0.5, 1.0, 2.0, 3.5])
    kl = create("divergence", "kl").generator(t)
    np.testing.assert_allclose(kl, t * np.log(t))
    assert create("divergence", "tv").generator(np.array([1.0]))[0] == 0.0
    # JS against scipy (jensenshannon returns the square root of JS in nats with base e).
    p, q = _rows(1)
    js = (q * create("divergence", "js").generator(p / q)).sum(1)
    np.testing.assert_allclose(js, [jensenshannon(a, b) ** 2 for a, b in zip(p, q)], rtol=1e-9)
    np.testing.assert_allclose((q * kl_gen(p / q)).sum(1), rel_entr(p, q).sum(1), rtol=1e-9)


def kl_gen(t: np.ndarray) -> np.ndarray:
    return create("divergence", "kl").generator(t)


def test_mixture_is_the_normalised_weighted_sum_of_its_parts_with_zeros_in_p() -> None:
    p, q = _rows(2, zeros=True)
    w = {"kl": 0.2, "js": 0.6, "tv": 1.0, "hellinger": 0.2}
    expect = sum(v * _value(k, p, q) for k, v in w.items()) / sum(w.values())
    np.testing.assert_allclose(_value({"name": "mixture", **w}, p, q), expect, rtol=1e-9)
    one = _value({"name": "mixture", "tv": 3.0}, p, q)
    np.testing.assert_allclose(one, _value("tv", p, q), rtol=1e-12)  # a corner is the part itself


def test_mixture_keeps_the_sparse_support_form() -> None:
    # f(0) is the weighted mean of the parts' f(0): KL 0, JS log 2 / 2, TV 1/2, Hellinger 1/2.
    div = create("divergence", {"name": "mixture", "kl": 1, "js": 1, "tv": 1, "hellinger": 1})
    assert div.f0 == pytest.approx((0 + math.log(2) / 2 + 0.5 + 0.5) / 4)
    assert div.has_pointwise and div.bound is None  # KL is unbounded
    assert create("divergence", {"name": "mixture", "tv": 1, "js": 1}).bound == pytest.approx((1 + math.log(2)) / 2)
    p, q = _rows(3, zeros=True)
    lp, lq = torch.tensor(np.log(np.where(p > 0, p, 1.0))), torch.tensor(np.log(q))
    lp = torch.where(torch.tensor(p > 0), lp, float("-inf"))
    terms = torch.where(lp > float("-inf"), div.pointwise(lp, lq), 0.0).sum(1)
    mass = torch.tensor(np.where(p > 0, 0.0, q).sum(1))
    np.testing.assert_allclose((terms + div.f0 * mass).numpy(), div(lp, lq).numpy(), rtol=1e-9)


def test_mixture_without_weights_weighs_the_four_the_same() -> None:
    p, q = _rows(4)
    expect = sum(_value(k, p, q) for k in ("kl", "js", "tv", "hellinger")) / 4
    np.testing.assert_allclose(_value("mixture", p, q), expect, rtol=1e-9)


@pytest.mark.parametrize("params,message", [({"kl": 0.0, "tv": 0.0}, "at least one positive weight"), ({"kl": -1.0}, "weight kl"),
                                            ({"tv": float("nan")}, "weight tv")])
def test_mixture_refuses_bad_weights(params, message) -> None:
    with pytest.raises(DivergenceError, match=message):
        create("divergence", {"name": "mixture", **params})
