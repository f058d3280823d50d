"""Tests of icon-bench-renyi: the conformance kit on both components, and renyi against a numpy closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from icon_bench_renyi import LearnableT, Renyi, learnable_t, renyi

import icon_bench
from icon_bench.loss import KL
from icon_bench.testing import ConformanceError, check_divergence, check_kernel, check_plugin


def renyi_numpy(p: np.ndarray, q: np.ndarray, alpha: float) -> np.ndarray:
    """The textbook per-row formula in float64, summing only over p > 0 (0^alpha = 0 for alpha > 0)."""
    out = []
    for pi, qi in zip(p, q, strict=True):
        s = pi > 0
        out.append(np.log(np.sum(pi[s] ** alpha * qi[s] ** (1.0 - alpha))) / (alpha - 1.0))
    return np.array(out)


def random_rows(n: int, m: int, seed: int, zeros: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, m, generator=gen, dtype=torch.float64)
    drop = torch.rand(n, m, generator=gen, dtype=torch.float64) < zeros
    drop[:, 0] = False  # every row keeps some mass
    return torch.log_softmax(logits.masked_fill(drop, -math.inf), dim=1)


def test_installed_plugin_passes_the_conformance_kit() -> None:
    assert sorted(check_plugin("icon-bench-renyi")) == ["divergence:renyi", "kernel:learnable_t"]


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.99, 1.0, 1.001, 2.0, 4.0])
def test_renyi_passes_the_kit_for_every_order(alpha: float) -> None:
    check_divergence(renyi, params={"alpha": alpha})


@pytest.mark.parametrize("params", [{}, {"dof": 3.0, "scale": 0.5}, {"include_self": True}])
def test_learnable_t_passes_the_kit(params: dict) -> None:
    check_kernel(learnable_t, params=params)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9, 1.2, 2.0, 3.5])
def test_renyi_matches_numpy_closed_form_with_zeros_in_p(alpha: float) -> None:
    lp, lq = random_rows(6, 9, seed=1, zeros=0.4), random_rows(6, 9, seed=2)
    expected = renyi_numpy(lp.exp().numpy(), lq.exp().numpy(), alpha)
    got = Renyi(alpha)(lp, lq)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    got32 = Renyi(alpha)(lp.float(), lq.float())
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_renyi_tends_to_kl_at_one_and_is_kl_at_one() -> None:
    lp, lq = random_rows(5, 7, seed=3, zeros=0.3), random_rows(5, 7, seed=4)
    kl = KL()(lp, lq)
    assert torch.allclose(Renyi(1.0)(lp, lq), kl)
    for eps in (1e-2, 1e-4, 1e-7):
        for a in (1 - eps, 1 + eps):
            assert torch.allclose(Renyi(a)(lp, lq), kl, atol=10 * eps), a
    # float32, close to one: the expm1 form keeps the digits the logsumexp form would cancel away
    assert torch.allclose(Renyi(1 + 1e-5)(lp.float(), lq.float()), kl.float(), atol=1e-4)


def test_renyi_is_monotone_in_alpha() -> None:
    lp, lq = random_rows(4, 8, seed=5), random_rows(4, 8, seed=6)
    values = torch.stack([Renyi(a)(lp, lq) for a in (0.2, 0.5, 0.9, 1.0, 1.5, 3.0)])
    assert bool((values[1:] >= values[:-1] - 1e-12).all())


def test_renyi_half_is_minus_twice_log_bhattacharyya() -> None:
    lp, lq = random_rows(3, 6, seed=7), random_rows(3, 6, seed=8)
    bc = (0.5 * (lp + lq)).exp().sum(1)
    assert torch.allclose(Renyi(0.5)(lp, lq), -2 * bc.log())


def test_renyi_gradients_finite_with_zeros_in_p_and_q() -> None:
    lp = random_rows(4, 6, seed=9, zeros=0.5)
    lq = random_rows(4, 6, seed=10).clone()
    lq[lp == -math.inf] = -math.inf  # zeros where p has zeros too (a kernel's excluded diagonal)
    lq = torch.log_softmax(lq, dim=1).requires_grad_(True)
    for a in (0.5, 2.0):
        Renyi(a)(lp, lq).sum().backward()
        assert torch.isfinite(lq.grad).all()
        lq.grad = None


def test_invalid_alpha_is_rejected_with_the_reason() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            Renyi(bad)


def test_learnable_t_matches_the_formula_and_learns_its_scale() -> None:
    x = torch.randn(5, 3, dtype=torch.float32)
    kernel = LearnableT(dof=2.0, scale=0.7)
    d = torch.cdist(x, x) ** 2
    w = (1 + d / (0.7 * 2.0)) ** (-1.5)
    w.fill_diagonal_(0)
    expected = w / w.sum(1, keepdim=True)
    got = kernel({"embeddings": x}).exp()
    assert torch.allclose(got, expected, atol=1e-5)
    assert [name for name, _ in kernel.named_parameters()] == ["log_scale"]
    # the scale is a parameter of the loss: one gradient step on a KL moves it
    p = torch.full((5, 5), 0.25).fill_diagonal_(0)
    loss = (p * (p.clamp_min(1e-12).log() - kernel({"embeddings": x}).clamp_min(-1e9))).sum()
    loss.backward()
    assert kernel.log_scale.grad is not None and kernel.log_scale.grad.abs() > 0


def test_components_are_registered_under_their_names() -> None:
    assert isinstance(icon_bench.divergence("renyi", alpha=0.5), Renyi)
    assert isinstance(icon_bench.divergence("renyi_alpha"), Renyi)
    assert isinstance(icon_bench.kernel("learnable_t", dof=3.0), LearnableT)


def test_kit_rejects_a_broken_variant() -> None:
    class Negated(Renyi):
        def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
            return -super().rows(log_p, log_q)

    with pytest.raises(ConformanceError, match="non-negative"):
        check_divergence(Negated(2.0))
