"""The structured paths of ICon equal the dense computation in value and gradient, for every divergence.

Sparse-support rows (p a few positives, finite f(0)), the fused cluster row sums (debiased p, KL),
block-by-block rows (debiased p, any pointwise divergence) and batched heads, against the dense
reference (fast=False), on random sparse p with empty rows, ties and one positive per row.
"""

from __future__ import annotations

import math

import pytest
import torch

import icon_bench as ib
from icon_bench.loss.cluster import Cluster
from icon_bench.loss.divergences import FDivergence

DIVERGENCES = ["kl", "tv", "js", "hellinger", "chi2", ("alpha", {"a": 0.5}), ("alpha", {"a": 1.5})]
Q_SPECS = ["cluster", ("cosine", {"temperature": 0.4}), ("student_t", {"dof": 1.0}), ("gaussian", {"sigma": 0.8})]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _batch(n: int = 18, dim: int = 5, seed: int = 5, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embeddings": torch.randn(n, dim, generator=g, dtype=dtype, requires_grad=True),
        "inputs": torch.randn(n, 4, generator=g, dtype=dtype),
        # labels 4 and 5 occur once: rows without support; ties: many rows share a label
        "labels": torch.tensor([0, 1, 2, 3] * ((n - 2) // 4) + [4, 5])[:n],
        "index": torch.arange(n) // 2,  # one other view per row: one positive per row
    }


def _compare(p, q, div, batch, **kw) -> None:
    dense = ib.ICon(p, q, div, fast=False, **kw)
    fast = ib.ICon(p, q, div, fast=True, **kw)
    fast.block_elements = 4 * batch["embeddings"].shape[0]  # several row blocks
    v_d, v_f = dense(batch), fast(batch)
    torch.testing.assert_close(v_f, v_d, **TOL)
    g_d, = torch.autograd.grad(v_d, batch["embeddings"])
    g_f, = torch.autograd.grad(v_f, batch["embeddings"])
    assert g_d.abs().max() > 1e-6
    torch.testing.assert_close(g_f, g_d, **TOL)
    torch.testing.assert_close(fast.rows(batch), dense.rows(batch), equal_nan=True, **TOL)


@pytest.mark.parametrize("div", DIVERGENCES, ids=str)
@pytest.mark.parametrize("q", Q_SPECS, ids=str)
@pytest.mark.parametrize("p", ["augmentation", "label", ("knn", {"k": 3})], ids=str)
def test_sparse_support_equals_dense(p, q, div) -> None:
    _compare(p, q, div, _batch())


@pytest.mark.parametrize("div", DIVERGENCES + ["reverse_kl"], ids=str)
@pytest.mark.parametrize("q", Q_SPECS[:2], ids=str)
@pytest.mark.parametrize("p_debias,q_debias", [(0.6, 0.0), (0.0, 0.3), (0.5, 0.2)])
def test_debiased_equals_dense(q, div, p_debias, q_debias) -> None:
    if div == "reverse_kl" and not p_debias:
        pytest.skip("reverse KL with zeros in p is dense by design (f(0) is infinite)")
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 2})]})
    _compare(p, q, div, _batch(seed=7), p_debias=p_debias, q_debias=q_debias)


@pytest.mark.parametrize("div", ["kl", "tv", "js", "hellinger"])
def test_cross_entropy_form_equals_dense(div) -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    batch = {"embeddings": z, "labels": torch.randint(0, 4, (12,), generator=g)}
    kw = dict(p=("label", {"to": "classes", "num_classes": 4}), q=("prototype", {"num_classes": 4, "dim": 6}))
    dense, fast = ib.ICon(kw["p"], kw["q"], div, fast=False), ib.ICon(kw["p"], kw["q"], div, fast=True)
    fast.load_state_dict(dense.state_dict())
    dense.double(), fast.double()
    torch.testing.assert_close(fast(batch), dense(batch), **TOL)
    torch.testing.assert_close(
        torch.autograd.grad(fast(batch), z)[0], torch.autograd.grad(dense(batch), z)[0], **TOL
    )


def test_plugin_f_divergence_with_finite_f0_takes_the_sparse_path() -> None:
    tv = FDivergence(lambda t: 0.5 * (t - 1.0).abs(), name="my_tv")
    assert tv.f0 == pytest.approx(0.5)
    assert FDivergence(lambda t: -torch.log(t)).f0 is None  # reverse KL's generator: infinite at 0
    assert FDivergence(lambda t: t * torch.log(t)).f0 == pytest.approx(0.0, abs=1e-12)
    loss = ib.ICon("augmentation", "cluster", tv)
    assert loss.uses_fast_path
    _compare("augmentation", "cluster", tv, _batch())


def test_divergence_without_the_form_goes_dense() -> None:
    loss = ib.ICon("augmentation", "cluster", "reverse_kl")
    assert "infinity" in loss.fast_path_blocker() and not loss.uses_fast_path
    batch = _batch()
    calls = []
    orig = Cluster.forward

    def spy(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    Cluster.forward = spy
    try:
        loss(batch)
    finally:
        Cluster.forward = orig
    assert calls, "reverse KL must evaluate q densely"


def test_sparse_path_never_builds_a_block() -> None:
    """pmi's form (knn p, cluster q, TV) reads q only at the listed entries: no row block at all."""
    loss = ib.ICon(("knn", {"k": 3}), "cluster", "tv")
    batch = _batch(n=40)
    orig = Cluster.row_blocks
    Cluster.row_blocks = lambda *a, **k: pytest.fail("built a row block")  # type: ignore[assignment]
    try:
        loss(batch).backward()
    finally:
        Cluster.row_blocks = orig


@pytest.mark.parametrize(
    "div,p_debias,q_debias",
    [("kl", 0.0, 0.0), ("tv", 0.0, 0.2), ("kl", 0.6, 0.2), ("js", 0.0, 0.0), ("js", 0.6, 0.2), ("hellinger", 0.5, 0.0), ("chi2", 0.4, 0.4)],
)
def test_batched_heads_equal_separate_heads(div, p_debias, q_debias) -> None:
    heads, n, c = 3, 20, 4
    g = torch.Generator().manual_seed(11)
    z = torch.randn(n, heads * c, generator=g, dtype=torch.float64, requires_grad=True)
    batch = {"embeddings": z, "index": torch.arange(n) // 2, "inputs": torch.randn(n, 3, generator=g, dtype=torch.float64)}
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 2})]})
    loss = ib.ICon(p, "cluster", div, p_debias=p_debias, q_debias=q_debias)
    assert loss.supports_heads
    sp = loss.prepare_p(batch)
    together, support = loss.rows_and_support({**batch, "embeddings": z.reshape(n, heads, c).transpose(0, 1)}, sp)
    separate = torch.stack([loss.rows_and_support({**batch, "embeddings": z[:, h * c : (h + 1) * c]}, sp)[0] for h in range(heads)])
    torch.testing.assert_close(together, separate)
    g1, = torch.autograd.grad(together.sum(), z)
    g2, = torch.autograd.grad(separate.sum(), z)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("n,block", [(30, 1 << 20), (30, 64)])
@pytest.mark.parametrize("keep,add", [(1.0, 0.0), (0.8, 0.01)])
def test_fused_cluster_row_sums_equal_autograd(n, block, keep, add) -> None:
    """The hand-written backward of the fused row sums against autograd on the dense formula."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    kernel = Cluster()
    r = torch.arange(n)[:, None]
    cols = torch.where(torch.tensor([[True, True, False]]) & (r % 2 == 0) | (torch.arange(3) == 0), (r + torch.tensor([1, 2, 3])) % n, -1)
    got, got_at = kernel.log_q_sums({"embeddings": logits}, "embeddings", cols, keep, add, block_elements=block)
    q = kernel({"embeddings": logits}).exp()  # the dense kernel, self excluded
    off = ~torch.eye(n, dtype=torch.bool)
    log_mixed = torch.log(torch.where(off, keep * q + add, 1.0))
    want = torch.where(off, log_mixed, 0.0).sum(1)
    want_at = torch.where(cols >= 0, log_mixed.gather(1, cols.clamp(min=0)), float("-inf"))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_at, want_at)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    w_at = torch.where(cols >= 0, torch.randn(cols.shape, generator=g, dtype=torch.float64), 0.0)
    lhs = (got * w).sum() + torch.where(cols >= 0, got_at * w_at, 0.0).sum()
    rhs = (want * w).sum() + torch.where(cols >= 0, want_at * w_at, 0.0).sum()
    torch.testing.assert_close(torch.autograd.grad(lhs, logits)[0], torch.autograd.grad(rhs, logits)[0])


PLUGIN_JS = FDivergence(
    lambda t: 0.5 * (t * torch.log(2 * t / (1 + t)) + torch.log(2 / (1 + t))), name="plugin_js"
)


@pytest.mark.parametrize("div", ["tv", "js", "hellinger", "chi2", ("alpha", {"a": 0.5}), PLUGIN_JS], ids=str)
@pytest.mark.parametrize("block", [None, 64])
def test_fused_row_sums_of_other_divergences_equal_dense(div, block) -> None:
    """A debiased p with a cluster q: the fused row sums of g(share, q) (one kept block or recomputed
    blocks; closed forms where the divergence has them, autograd on its pointwise form otherwise)."""
    batch = _batch(n=24, seed=13)
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 2})]})
    dense = ib.ICon(p, "cluster", div, p_debias=0.6, q_debias=0.2, fast=False)
    fast = ib.ICon(p, "cluster", div, p_debias=0.6, q_debias=0.2, fast=True)
    fast.forms = frozenset({"fused"})  # no row-block fallback: the fused form must take it
    if block is not None:
        fast.block_elements = block
    v_d, v_f = dense(batch), fast(batch)
    torch.testing.assert_close(v_f, v_d, **TOL)
    g_d, = torch.autograd.grad(v_d, batch["embeddings"])
    g_f, = torch.autograd.grad(v_f, batch["embeddings"])
    torch.testing.assert_close(g_f, g_d, **TOL)


@pytest.mark.parametrize("div", ["tv", "js", "hellinger"])
def test_closed_forms_in_q_equal_the_pointwise_form(div) -> None:
    """term_q / term_dq (probability space) against pointwise (log space) and its autograd derivative."""
    d = ib.divergence(div)
    g = torch.Generator().manual_seed(4)
    p = torch.rand(50, 1, generator=g, dtype=torch.float64) * 1e-2 + 1e-6
    q = torch.exp(torch.empty(50, 40, dtype=torch.float64).uniform_(-30.0, 0.0, generator=g)).requires_grad_(True)
    ref = d.pointwise(p.log().expand_as(q), q.log())
    torch.testing.assert_close(d.term_q(p, q.detach()), ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.term_dq(p, q.detach()), torch.autograd.grad(ref.sum(), q)[0], rtol=1e-8, atol=1e-10)


def test_fused_other_divergences_in_float32_stay_close_to_float64() -> None:
    """The closed forms in float32 (the training dtype) against the dense float64 reference."""
    b64 = _batch(n=96, dim=8, seed=21)
    b32 = {k: (v.detach().float().requires_grad_(v.requires_grad) if v.is_floating_point() else v) for k, v in b64.items()}
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 3})]})
    for div in ("tv", "js", "hellinger"):
        want = ib.ICon(p, "cluster", div, p_debias=0.6, q_debias=0.6, fast=False)(b64)
        got = ib.ICon(p, "cluster", div, p_debias=0.6, q_debias=0.6)(b32)
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-6)


def test_cluster_floor_matches_dense_in_float32() -> None:
    """Confident heads on disjoint clusters push q below the floor: float32 agrees within 1e-5."""
    n, c = 64, 8
    logits = (torch.nn.functional.one_hot(torch.arange(n) % c, c).float() * 40.0).requires_grad_(True)
    batch = {"embeddings": logits, "index": torch.arange(n) // 2, "inputs": torch.randn(n, 3)}
    for div in ("kl", "tv"):
        dense = ib.ICon(("knn", {"k": 3}), "cluster", div, q_debias=0.0, fast=False)
        fast = ib.ICon(("knn", {"k": 3}), "cluster", div, fast=True)
        v_d, v_f = dense(batch), fast(batch)
        assert math.isfinite(float(v_f.detach()))
        torch.testing.assert_close(v_f, v_d, rtol=1e-5, atol=1e-5)


def test_fused_products_in_bfloat16_stay_close() -> None:
    """bf16 operands (the CUDA default) with float32 logs: the loss within 1e-2, gradients aligned."""
    batch = _batch(n=64, dim=8, seed=9, dtype=torch.float32)
    p = ("mix", {"kernels": ["augmentation", ("knn", {"k": 3})]})
    exact = ib.ICon(p, "cluster", p_debias=0.6, q_debias=0.6)
    exact.matmul_dtype = None
    bf16 = ib.ICon(p, "cluster", p_debias=0.6, q_debias=0.6)
    bf16.matmul_dtype = torch.bfloat16
    v_e, v_b = exact(batch), bf16(batch)
    torch.testing.assert_close(v_b, v_e, rtol=1e-2, atol=1e-2)
    g_e, = torch.autograd.grad(v_e, batch["embeddings"])
    g_b, = torch.autograd.grad(v_b, batch["embeddings"])
    assert torch.nn.functional.cosine_similarity(g_e.flatten(), g_b.flatten(), dim=0) > 0.99


def test_fused_backward_twice_is_refused_not_wrong() -> None:
    """The kept block is reused in place by the backward: a second backward must fail, not mislead."""
    batch = _batch(n=16)
    loss = ib.ICon(("mix", {"kernels": ["augmentation", ("knn", {"k": 2})]}), "cluster", p_debias=0.5)(batch)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


@pytest.mark.parametrize("q", [("student_t", {"dof": 1.0}), ("gaussian", {"sigma": 0.7}), ("cosine", {"temperature": 0.5})], ids=str)
def test_dense_p_against_softmax_logits_equals_dense(q) -> None:
    """t-SNE's form: a dense calibrated p, KL against a softmax q computed from its logits."""
    batch = _batch(n=24, seed=4)
    p = ("gaussian", {"perplexity": 5.0})
    dense, fast = ib.ICon(p, q, fast=False), ib.ICon(p, q)
    for _ in range(2):  # the second call reuses the cached sum p log p of an unchanged p
        v_d, v_f = dense(batch), fast(batch)
        torch.testing.assert_close(v_f, v_d, **TOL)
        torch.testing.assert_close(
            torch.autograd.grad(v_f, batch["embeddings"])[0], torch.autograd.grad(v_d, batch["embeddings"])[0], **TOL
        )


def test_tsne_recipe_loss_unchanged_by_the_softmax_form() -> None:
    from icon_bench.data.load import load_dataset

    data = load_dataset({"name": "digits", "subset": 300})
    method = ib.method("tsne")
    settings = {"settings": {"epochs": 5}}
    fast = method.run(data, seed=0, overrides=settings)
    method_dense = ib.method("tsne")
    import icon_bench.loss.objective as objective

    forms = objective.ICon.forms
    objective.ICon.forms = frozenset(forms - {"softmax"})
    try:
        dense = method_dense.run(data, seed=0, overrides=settings)
    finally:
        objective.ICon.forms = forms
    torch.testing.assert_close(torch.tensor(fast.history["loss"]), torch.tensor(dense.history["loss"]), rtol=1e-5, atol=1e-6)
