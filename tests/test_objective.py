"""ICon against independently written losses (NT-Xent, SupCon, cross-entropy, SNE); fast path vs dense."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import icon_bench as ib
from icon_bench.loss.kernel import KernelError

DIVERGENCES = ["kl", "reverse_kl", "js", "tv", "hellinger", "chi2", ("alpha", {"a": 0.3}), ("alpha", {"a": 1.5})]


def _two_views(n: int = 8, d: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, d, generator=g, dtype=torch.float64, requires_grad=True)
    return {"embeddings": z, "index": torch.arange(n).repeat(2), "inputs": torch.randn(2 * n, 3, generator=g, dtype=torch.float64)}


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent, written from the paper: 2N anchors, positive = the other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / tau
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        losses.append(-(sim[i, j] - torch.logsumexp(sim[i, others], 0)))
    return torch.stack(losses).mean()


def test_augmentation_cosine_equals_nt_xent() -> None:
    batch = _two_views()
    z = batch["embeddings"]
    loss = ib.ICon("augmentation", ("cosine", {"temperature": 0.3}), "kl", fast=False)(batch)
    expected = nt_xent(z[:8], z[8:], 0.3)
    torch.testing.assert_close(loss, expected, rtol=1e-7, atol=1e-7)
    g_loss, = torch.autograd.grad(loss, z)
    g_ref, = torch.autograd.grad(expected, z)
    torch.testing.assert_close(g_loss, g_ref)


def supcon_out(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al.'s L_out per anchor: -1/|P(i)| sum_{p in P(i)} log(exp(s_ip) / sum_{a != i} exp(s_ia))."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / tau
    out = torch.full((len(y),), torch.nan, dtype=z.dtype)
    for i in range(len(y)):
        pos = [p for p in range(len(y)) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = torch.logsumexp(torch.cat([sim[i, :i], sim[i, i + 1 :]]), 0)
        out[i] = -torch.stack([sim[i, p] - denom for p in pos]).mean()
    return out


def test_label_cosine_equals_supcon_minus_entropy_of_p() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 1, 0])  # class 3 has one member: no positives
    rows = ib.ICon("label", ("cosine", {"temperature": 0.2}), fast=False).rows({"embeddings": z, "labels": y})
    # p_i is uniform over the |P(i)| positives, so KL_i = L_out_i - H(p_i) with H(p_i) = log |P(i)|.
    positives = torch.tensor([(y == y[i]).sum().item() - 1 for i in range(12)], dtype=torch.float64)
    expected = supcon_out(z, y, 0.2) - torch.log(positives)
    assert torch.isnan(rows[9]) and torch.isnan(expected[9])  # anchors without positives drop out
    torch.testing.assert_close(rows, expected, equal_nan=True)
    fast = ib.ICon("label", ("cosine", {"temperature": 0.2}), fast=True).rows({"embeddings": z, "labels": y})
    torch.testing.assert_close(fast, expected, equal_nan=True)


def test_prototype_with_class_labels_equals_cross_entropy() -> None:
    torch.manual_seed(2)
    z = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (10,))
    for fast in (False, True):
        loss_fn = ib.ICon(("label", {"to": "classes", "num_classes": 4}), ("prototype", {"num_classes": 4, "dim": 6, "temperature": 0.7}), fast=fast)
        loss_fn.double()
        torch.manual_seed(3)
        loss_fn.q.weight.data = torch.randn(4, 6, dtype=torch.float64)
        loss = loss_fn({"embeddings": z, "labels": y})
        expected = F.cross_entropy(z @ loss_fn.q.weight.T / 0.7, y)
        torch.testing.assert_close(loss, expected)
        gw, = torch.autograd.grad(loss, loss_fn.q.weight)
        gw_ref, = torch.autograd.grad(expected, loss_fn.q.weight)
        torch.testing.assert_close(gw, gw_ref)


def test_debiased_class_labels_equal_label_smoothing_up_to_entropy() -> None:
    # p = (1 - eps) onehot + eps / C is the label-smoothing target, so KL = CE_smooth - H(p).
    torch.manual_seed(8)
    z = torch.randn(9, 3, dtype=torch.float64)
    y = torch.randint(0, 5, (9,))
    eps, c = 0.2, 5
    for fast in (False, True):
        loss_fn = ib.ICon(("label", {"to": "classes", "num_classes": c}), ("prototype", {"num_classes": c, "dim": 3}), p_debias=eps, fast=fast)
        loss_fn.double()
        logits = z @ loss_fn.q.weight.T / 1.0
        hi, lo = 1 - eps + eps / c, eps / c
        entropy = -(hi * math.log(hi) + (c - 1) * lo * math.log(lo))
        expected = F.cross_entropy(logits, y, label_smoothing=eps) - entropy
        torch.testing.assert_close(loss_fn({"embeddings": z, "labels": y}), expected)


def test_gaussian_pair_equals_sne() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(15, 6, generator=g, dtype=torch.float64)
    y = torch.randn(15, 2, generator=g, dtype=torch.float64)
    # SNE (Hinton & Roweis 2002): C = sum_i sum_j p_j|i log(p_j|i / q_j|i), q from exp(-||y_i - y_j||^2).
    sigma = 1.3
    dx = ((x[:, None] - x[None]) ** 2).sum(-1).numpy()
    dy = ((y[:, None] - y[None]) ** 2).sum(-1).numpy()
    P = np.exp(-dx / (2 * sigma**2))
    Q = np.exp(-dy)
    np.fill_diagonal(P, 0.0)
    np.fill_diagonal(Q, 0.0)
    P /= P.sum(1, keepdims=True)
    Q /= Q.sum(1, keepdims=True)
    off = ~np.eye(15, dtype=bool)
    cost = (P[off] * np.log(P[off] / Q[off])).sum()
    loss = ib.ICon(("gaussian", {"sigma": sigma}), ("gaussian", {"sigma": math.sqrt(0.5)}))({"inputs": x, "embeddings": y})
    np.testing.assert_allclose(loss.item() * 15, cost, rtol=1e-10)


P_SPECS = ["augmentation", "label", ("knn", {"k": 3})]
Q_SPECS = ["cluster", ("cosine", {"temperature": 0.4})]


@pytest.mark.parametrize("p", P_SPECS, ids=str)
@pytest.mark.parametrize("q", Q_SPECS, ids=str)
@pytest.mark.parametrize("p_debias,q_debias", [(0.0, 0.0), (0.6, 0.0), (0.0, 0.3), (0.5, 0.2)])
def test_fast_path_equals_dense_in_value_and_gradient(p, q, p_debias, q_debias) -> None:
    g = torch.Generator().manual_seed(5)
    n = 18
    batch = {
        "embeddings": torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True),
        "inputs": torch.randn(n, 4, generator=g, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 2, 3] * 4 + [4, 5]),  # labels 4, 5: rows without support
        "index": torch.arange(n) // 3,
    }
    dense = ib.ICon(p, q, p_debias=p_debias, q_debias=q_debias, fast=False)
    fast = ib.ICon(p, q, p_debias=p_debias, q_debias=q_debias, fast=True)
    fast.block_elements = 4 * n  # several row blocks, so chunking and checkpointing are exercised
    assert fast.uses_fast_path and not dense.uses_fast_path
    v_dense = dense(batch)
    v_fast = fast(batch)
    torch.testing.assert_close(v_fast, v_dense, rtol=1e-5, atol=1e-5)
    g_dense, = torch.autograd.grad(v_dense, batch["embeddings"])
    g_fast, = torch.autograd.grad(v_fast, batch["embeddings"])
    torch.testing.assert_close(g_fast, g_dense, rtol=1e-5, atol=1e-5)
    assert g_dense.abs().max() > 1e-4
    torch.testing.assert_close(fast.rows(batch), dense.rows(batch), equal_nan=True)


def test_fast_path_with_mixed_propagated_p() -> None:
    g = torch.Generator().manual_seed(6)
    batch = {
        "embeddings": torch.randn(16, 7, generator=g, dtype=torch.float64, requires_grad=True),
        "inputs": torch.randn(16, 4, generator=g, dtype=torch.float64),
        "index": torch.arange(16) % 8,
    }
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 2})]})
    dense = ib.ICon(p, "cluster", p_debias=0.6, q_debias=0.2, p_propagate=2, fast=False)
    fast = ib.ICon(p, "cluster", p_debias=0.6, q_debias=0.2, p_propagate=2, fast=True)
    fast.block_elements = 40
    v_d, v_f = dense(batch), fast(batch)
    torch.testing.assert_close(v_f, v_d)
    torch.testing.assert_close(torch.autograd.grad(v_f, batch["embeddings"])[0], torch.autograd.grad(v_d, batch["embeddings"])[0])


def test_fast_mode_selection() -> None:
    assert ib.ICon("augmentation", "cosine").uses_fast_path
    assert ib.ICon("augmentation", "cosine", "tv").uses_fast_path
    assert not ib.ICon("augmentation", "cosine", "reverse_kl").uses_fast_path
    assert ib.ICon("augmentation", "cosine", "reverse_kl", p_debias=0.5).uses_fast_path
    assert not ib.ICon("gaussian", "cosine").uses_fast_path
    with pytest.raises(KernelError, match="'reverse_kl' has f\\(0\\) = infinity"):
        ib.ICon("augmentation", "cosine", "reverse_kl", fast=True)
    with pytest.raises(KernelError, match="sparse"):
        ib.ICon("gaussian", "cosine", fast=True)
    with pytest.raises(KernelError, match="fast"):
        ib.ICon("augmentation", "cosine", fast="yes")


def test_specs_errors_and_rows_without_support() -> None:
    z = torch.randn(4, 3, dtype=torch.float64)
    loss = ib.ICon(("label", {}), {"name": "cosine", "temperature": 0.5}, ("alpha", {"a": 0.5}))
    assert loss.divergence.a == 0.5 and loss.q.temperature == 0.5
    with pytest.raises(KernelError, match="no row"):
        loss({"embeddings": z, "labels": torch.arange(4)})
    with pytest.raises(KernelError, match="classes"):
        ib.ICon(("label", {"to": "classes"}), "cosine")
    # a row without support is left out of the mean, not counted as zero
    y = torch.tensor([0, 0, 1, 1, 9])
    batch = {"embeddings": torch.randn(5, 3, dtype=torch.float64), "labels": y}
    loss = ib.ICon("label", "cosine")
    rows = loss.rows(batch)
    assert torch.isnan(rows[4]) and torch.isfinite(rows[:4]).all()
    torch.testing.assert_close(loss(batch), rows[:4].mean())


def _all_kernel_specs():
    return [
        ("gaussian", {"sigma": 0.05}),
        ("gaussian", {"perplexity": 3.0}),
        ("student_t", {"dof": 0.5}),
        ("cosine", {"temperature": 0.01}),
        ("knn", {"k": 2}),
        ("knn", {"k": 2, "scope": "graph"}),
        "label",
        "augmentation",
        "cluster",
        "uniform",
        ("mix", {"kernels": [("cosine", {"temperature": 0.01}), "cluster"]}),
        ("debias", {"kernel": ("cosine", {"temperature": 0.01}), "alpha": 0.5}),
        ("propagate", {"kernel": ("knn", {"k": 2}), "steps": 2}),
    ]


def _far_batch() -> dict[str, torch.Tensor]:
    # float32, far-apart points: cosine at T = 0.01 and gaussian at sigma = 0.05 underflow q.
    g = torch.Generator().manual_seed(7)
    n = 10
    z = (torch.randn(n, 4, generator=g) * 30.0).requires_grad_(True)
    return {
        "embeddings": z,
        "inputs": torch.randn(n, 5, generator=g) * 10.0,
        "labels": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 5]),
        "index": torch.arange(n) // 2,
        "neighbors": torch.randint(0, 5, (n, 3), generator=g),
    }


@pytest.mark.parametrize("div", DIVERGENCES, ids=str)
def test_gradients_finite_for_every_kernel_pair(div) -> None:
    # every kernel as q (against a p with the same columns) and as p (against cosine at T = 0.01)
    pairs = [("augmentation", k) for k in _all_kernel_specs()] + [(k, ("cosine", {"temperature": 0.01})) for k in _all_kernel_specs()]
    pairs.append((("label", {"to": "classes", "num_classes": 6}), ("prototype", {"num_classes": 6, "dim": 4, "temperature": 0.01})))
    for p, q in pairs:
        batch = _far_batch()
        for p_debias in (0.0, 0.5):
            loss_fn = ib.ICon(p, q, div, p_debias=p_debias)
            value = loss_fn(batch)
            assert torch.isfinite(value), (p, q, div, p_debias, value)
            params = [batch["embeddings"], *loss_fn.parameters()]
            if not value.requires_grad:
                continue  # q does not depend on the embeddings (label, augmentation, uniform, graph knn)
            grads = torch.autograd.grad(value, params, allow_unused=True)
            for grad in grads:
                assert grad is None or torch.isfinite(grad).all(), (p, q, div, p_debias)
