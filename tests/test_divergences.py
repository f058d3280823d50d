"""Divergences against scipy and closed forms in numpy, bounds, limits, and finite gradients at zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

import icon_bench as ib
from icon_bench.loss.divergences import FDivergence

NAMES = ["kl", "reverse_kl", "js", "tv", "hellinger", "chi2", "alpha"]


def _random_pair(rng: np.random.Generator, n: int = 6, m: int = 9, zeros_in_p: bool = True):
    p = rng.random((n, m)) ** 3
    if zeros_in_p:
        p[rng.random((n, m)) < 0.35] = 0.0
        p[:, 0] = rng.random(n) + 0.1  # every row keeps some mass
    q = rng.random((n, m)) + 0.05
    return p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)


def _logs(p: np.ndarray, q: np.ndarray):
    with np.errstate(divide="ignore"):
        return torch.tensor(np.log(p)), torch.tensor(np.log(q))


def _alpha_ref(p: np.ndarray, q: np.ndarray, a: float) -> np.ndarray:
    return (1.0 - (p**a * q ** (1.0 - a)).sum(1)) / (a * (1.0 - a))


REFERENCES = {
    "kl": lambda p, q: rel_entr(p, q).sum(1),
    "reverse_kl": lambda p, q: rel_entr(q, p).sum(1),
    "js": lambda p, q: np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q)]),
    "tv": lambda p, q: 0.5 * np.abs(p - q).sum(1),
    "hellinger": lambda p, q: 0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(1),
    "chi2": lambda p, q: ((p - q) ** 2 / q).sum(1),
    "alpha": lambda p, q: _alpha_ref(p, q, 0.5),
}


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_with_zeros_in_p(name: str) -> None:
    rng = np.random.default_rng(0)
    p, q = _random_pair(rng)
    if name == "reverse_kl":
        q, p = p, q  # KL(q || p) is finite when the zeros are in q
    lp, lq = _logs(p, q)
    got = ib.divergence(name)(lp, lq).numpy()
    np.testing.assert_allclose(got, REFERENCES[name](p, q), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("a", [-0.5, 0.25, 0.7, 2.0])
def test_alpha_family_matches_amari_closed_form(a: float) -> None:
    rng = np.random.default_rng(1)
    p, q = _random_pair(rng, zeros_in_p=a > 0)
    lp, lq = _logs(p, q)
    got = ib.divergence("alpha", a=a)(lp, lq).numpy()
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(got, _alpha_ref(p, q, a), rtol=1e-9)


def test_alpha_tends_to_kl_and_reverse_kl_at_the_ends() -> None:
    rng = np.random.default_rng(2)
    p, q = _random_pair(rng, zeros_in_p=False)
    lp, lq = _logs(p, q)
    kl = rel_entr(p, q).sum(1)
    rkl = rel_entr(q, p).sum(1)
    near_one = ib.divergence("alpha", a=1 - 1e-5)(lp, lq).numpy()
    near_zero = ib.divergence("alpha", a=1e-5)(lp, lq).numpy()
    np.testing.assert_allclose(near_one, kl, rtol=1e-3)
    np.testing.assert_allclose(near_zero, rkl, rtol=1e-3)
    # and exactly at the ends, by delegation
    np.testing.assert_allclose(ib.divergence("alpha", a=1.0)(lp, lq).numpy(), kl, rtol=1e-12)
    np.testing.assert_allclose(ib.divergence("alpha", a=0.0)(lp, lq).numpy(), rkl, rtol=1e-12)
    # the ends must differ, or the check above proves nothing
    assert np.abs(kl - rkl).max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_zero_on_equal_distributions(name: str) -> None:
    rng = np.random.default_rng(3)
    p, _ = _random_pair(rng)
    lp, _ = _logs(p, p)
    got = ib.divergence(name)(lp, lp.clone())
    np.testing.assert_allclose(got.numpy(), 0.0, atol=1e-12)


@pytest.mark.parametrize("name,bound", [("tv", 1.0), ("js", math.log(2.0)), ("hellinger", 1.0)])
def test_bounds_hold_and_are_reached_on_disjoint_supports(name: str, bound: float) -> None:
    div = ib.divergence(name)
    assert div.bound == pytest.approx(bound)
    rng = np.random.default_rng(4)
    p, q = _random_pair(rng, n=50)
    lp, lq = _logs(p, q)
    assert (div(lp, lq) <= bound + 1e-12).all()
    # disjoint supports: p on the first half, q on the second
    p = np.zeros((3, 8))
    q = np.zeros((3, 8))
    p[:, :4] = rng.random((3, 4)) + 0.1
    q[:, 4:] = rng.random((3, 4)) + 0.1
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    lp, lq = _logs(p, q)
    np.testing.assert_allclose(div(lp, lq).numpy(), bound, rtol=1e-12)


def test_fdivergence_from_generators_equals_builtins() -> None:
    rng = np.random.default_rng(5)
    p, q = _random_pair(rng)
    lp, lq = _logs(p, q)
    kl_f = FDivergence(lambda t: t * torch.log(t), name="kl_f")
    np.testing.assert_allclose(kl_f(lp, lq).numpy(), ib.divergence("kl")(lp, lq).numpy(), rtol=1e-10)
    tv_f = FDivergence(lambda t: 0.5 * (t - 1).abs(), name="tv_f", bound=1.0)
    np.testing.assert_allclose(tv_f(lp, lq).numpy(), 0.5 * np.abs(p - q).sum(1), rtol=1e-10)
    # q = 0 under p > 0: TV's generator grows like t / 2, so the term tends to p / 2 (documented limit)
    lq_hole = lq.clone()
    lq_hole[:, 0] = -math.inf
    q_hole = np.exp(lq_hole.numpy())
    expected = 0.5 * np.abs(p - q_hole).sum(1)
    np.testing.assert_allclose(tv_f(lp, lq_hole).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES + ["alpha_neg", "alpha_big", "f_kl"])
def test_gradients_finite_at_zeros_and_underflow(name: str) -> None:
    torch.manual_seed(0)
    if name == "alpha_neg":
        div = ib.divergence("alpha", a=-0.5)
    elif name == "alpha_big":
        div = ib.divergence("alpha", a=3.0)
    elif name == "f_kl":
        div = FDivergence(lambda t: t * torch.log(t))
    else:
        div = ib.divergence(name)
    n, m = 5, 7
    # p: exact zeros (including a diagonal); q: a logit spread that underflows float32 plus -inf
    # where p = 0, as kernels give on the diagonal.
    p_logits = torch.randn(n, m).masked_fill(torch.rand(n, m) < 0.4, -math.inf)
    p_logits[:, 0] = 0.0
    p_logits[:, 1] = -math.inf
    p_logits.requires_grad_(True)
    q_logits = (torch.randn(n, m) * 300.0).detach()
    q_logits[:, 1] = -math.inf
    q_logits.requires_grad_(True)
    lp = torch.log_softmax(p_logits, 1)
    lq = torch.log_softmax(q_logits, 1)
    value = div(lp, lq)
    assert torch.isfinite(value).all(), value
    value.sum().backward()
    assert torch.isfinite(p_logits.grad).all()
    assert torch.isfinite(q_logits.grad).all()
    assert q_logits.grad.abs().sum() > 0  # the loss does reach q


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="same"):
        ib.divergence("kl")(torch.zeros(2, 3), torch.zeros(2, 4))


def test_unknown_divergence_suggests_a_name() -> None:
    with pytest.raises(KeyError, match="hellinger"):
        ib.divergence("helinger")
