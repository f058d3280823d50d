"""Kernels against numpy/scipy/scikit-learn references: normalisation, diagonal, perplexity, structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import entr
from sklearn.neighbors import NearestNeighbors

import icon_bench as ib
from icon_bench.errors import DataError
from icon_bench.loss.kernel import KernelError
from icon_bench.loss.transforms import Debias, Mix, Propagate


def _batch(n: int = 12, d: int = 4, seed: int = 0, classes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embeddings": torch.randn(n, d, generator=g, dtype=torch.float64),
        "inputs": torch.randn(n, 6, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, classes, (n,), generator=g),
        "index": torch.arange(n) // 2,
    }


def _row_normalised(w: np.ndarray, exclude_self: bool = True) -> np.ndarray:
    w = w.copy()
    if exclude_self:
        np.fill_diagonal(w, 0.0)
    return w / w.sum(1, keepdims=True)


SQUARE_SPECS = [
    ("gaussian", {}),
    ("gaussian", {"metric": "cosine", "sigma": 0.3}),
    ("gaussian", {"perplexity": 4.0}),
    ("student_t", {"dof": 2.0}),
    ("cosine", {"temperature": 0.1}),
    ("cluster", {}),
    ("uniform", {}),
    ("knn", {"k": 3}),
    ("label", {}),
    ("augmentation", {}),
    ("mix", {"kernels": ["augmentation", ("knn", {"k": 2})], "weights": [1.0, 3.0]}),
    ("debias", {"kernel": "augmentation", "alpha": 0.3}),
    ("propagate", {"kernel": ("knn", {"k": 2}), "steps": 3}),
]


@pytest.mark.parametrize("spec", SQUARE_SPECS, ids=lambda s: s[0] + str(sorted(s[1])))
def test_rows_sum_to_one_and_exclude_self(spec) -> None:
    batch = _batch()
    kernel = ib.kernel(spec)
    for key in ("embeddings", "inputs"):
        lp = kernel(batch, key=key)
        assert lp.shape == (12, 12)
        assert torch.isneginf(lp.diagonal()).all()
        alive = (lp > -math.inf).any(1)
        assert alive.any()
        np.testing.assert_allclose(lp.exp().sum(1)[alive].numpy(), 1.0, atol=1e-12)
        assert not torch.isnan(lp).any()


def test_include_self_keeps_the_diagonal() -> None:
    lp = ib.kernel("cosine", include_self=True)(_batch())
    assert torch.isfinite(lp.diagonal()).all()
    np.testing.assert_allclose(lp.exp().sum(1).numpy(), 1.0, atol=1e-12)


def test_gaussian_and_student_t_match_closed_forms() -> None:
    batch = _batch()
    x = batch["embeddings"].numpy()
    d = cdist(x, x, "sqeuclidean")
    got = ib.kernel("gaussian", sigma=0.7)(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised(np.exp(-d / (2 * 0.7**2))), atol=1e-12)
    # dof = 1 is the t-SNE Cauchy kernel 1 / (1 + d)
    got = ib.kernel("student_t", dof=1.0)(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised(1.0 / (1.0 + d)), atol=1e-12)
    got = ib.kernel("student_t", dof=3.0, scale=2.0)(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised((1 + d / 6.0) ** -2.0), atol=1e-12)
    dc = cdist(x, x, "cosine")
    got = ib.kernel("gaussian", sigma=0.5, metric="cosine")(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised(np.exp(-dc / 0.5)), atol=1e-12)


def test_cosine_and_cluster_match_closed_forms() -> None:
    batch = _batch()
    z = batch["embeddings"].numpy()
    cos = 1.0 - cdist(z, z, "cosine")
    got = ib.kernel("cosine", temperature=0.2)(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised(np.exp(cos / 0.2)), atol=1e-12)
    phi = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    q = np.einsum("ic,jc->ij", phi, phi / phi.sum(0))
    np.testing.assert_allclose(q.sum(1), 1.0)  # the cluster kernel with self already sums to 1
    got = ib.kernel("cluster")(batch).exp().numpy()
    np.testing.assert_allclose(got, _row_normalised(q), atol=1e-12)
    got = ib.kernel("cluster", include_self=True)(batch).exp().numpy()
    np.testing.assert_allclose(got, q, atol=1e-12)


def test_perplexity_calibration_hits_the_target_per_row() -> None:
    batch = _batch(n=40, d=5, seed=1)
    batch["embeddings"][:5] *= 10.0  # rows at very different scales need very different sigmas
    kernel = ib.kernel("gaussian", perplexity=7.5)
    p = kernel(batch).exp().numpy()
    entropy = entr(p).sum(1)  # -p log p, 0 at p = 0
    np.testing.assert_allclose(np.exp(entropy), 7.5, rtol=1e-6)
    betas = kernel.calibrate(batch["embeddings"])
    assert betas.max() / betas.min() > 10.0  # really per row, not one global sigma
    with pytest.raises(KernelError, match="perplexity"):
        ib.kernel("gaussian", perplexity=50.0)(batch)


def test_knn_batch_matches_scikit_learn() -> None:
    batch = _batch(n=30, seed=2)
    x = batch["inputs"].numpy()
    _, nn_idx = NearestNeighbors(n_neighbors=5).fit(x).kneighbors(x)
    expected = np.zeros((30, 30))
    for i, row in enumerate(nn_idx):
        expected[i, [j for j in row if j != i][:4]] = 0.25
    got = ib.kernel("knn", k=4)(batch, key="inputs").exp().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    sp = ib.kernel("knn", k=4).sparse(batch, "inputs")
    np.testing.assert_allclose(sp.dense().exp().numpy(), expected, atol=1e-12)


def test_knn_graph_scope_uses_global_neighbours() -> None:
    index = torch.tensor([0, 1, 2, 3, 0, 1, 7])  # two views of samples 0 and 1
    neighbors = torch.tensor([[1, 5, 9], [0, 2, 2], [8, 9, 5], [3, 1, 0], [1, 5, 9], [4, 4, 4], [0, 3, 1]])
    batch = {"index": index, "neighbors": neighbors, "embeddings": torch.zeros(7, 2, dtype=torch.float64)}
    expected = np.zeros((7, 7))
    for i in range(7):
        cols = [j for j in range(7) if j != i and int(index[j]) in neighbors[i].tolist()]
        if cols:
            expected[i, cols] = 1.0 / len(cols)
    kernel = ib.kernel("knn", scope="graph", k=3)
    dense = kernel(batch).exp().numpy()
    np.testing.assert_allclose(dense, expected, atol=1e-12)
    np.testing.assert_allclose(kernel.sparse(batch).dense().exp().numpy(), expected, atol=1e-12)
    assert (dense[2] == 0).all() and (dense[5] == 0).all()  # rows whose neighbours are absent
    with pytest.raises(DataError, match="neighbors"):
        kernel({"index": index})


def test_label_augmentation_and_classes() -> None:
    batch = _batch(n=10, seed=3)
    y = batch["labels"].numpy()
    expected = _row_normalised((y[:, None] == y[None, :]).astype(float))
    got = ib.kernel("label")(batch).exp().numpy()
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(expected), atol=1e-12)
    np.testing.assert_allclose(ib.kernel("label").sparse(batch).dense().exp().numpy(), got, atol=1e-12)
    onehot = ib.kernel("label", to="classes", num_classes=5)(batch).exp().numpy()
    np.testing.assert_allclose(onehot, np.eye(5)[y])
    idx = batch["index"].numpy()
    expected = _row_normalised((idx[:, None] == idx[None, :]).astype(float))
    got = ib.kernel("augmentation")(batch)
    np.testing.assert_allclose(got.exp().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(ib.kernel("augmentation").sparse(batch).dense().numpy(), got.numpy())
    with pytest.raises(DataError, match="labels"):
        ib.kernel("label", to="classes", num_classes=2)(batch)


def test_debias_mix_and_propagate_match_numpy() -> None:
    batch = _batch(n=14, seed=4)
    n = 14
    aug = ib.kernel("augmentation")(batch).exp().numpy()
    knn = ib.kernel("knn", k=3)(batch, key="inputs").exp().numpy()
    off = 1.0 - np.eye(n)
    # debias: (1 - a) p + a / (N - 1) off the diagonal
    got = Debias("augmentation", 0.4)(batch).exp().numpy()
    np.testing.assert_allclose(got, 0.6 * aug + 0.4 * off / (n - 1), atol=1e-12)
    # mix: normalised weighted sum
    mix = Mix(["augmentation", ("knn", {"k": 3})], weights=[1.0, 3.0])
    expected_mix = (aug + 3.0 * knn) / 4.0
    np.testing.assert_allclose(mix(batch, key="inputs").exp().numpy(), expected_mix, atol=1e-12)
    np.testing.assert_allclose(mix.sparse(batch, "inputs").dense().exp().numpy(), expected_mix, atol=1e-12)
    # propagate: P + P^2 + P^3, diagonal dropped, rows renormalised; and its binarised form
    walks = knn + knn @ knn + knn @ knn @ knn
    prop = Propagate(("knn", {"k": 3}), steps=3)
    np.testing.assert_allclose(prop(batch, key="inputs").exp().numpy(), _row_normalised(walks), atol=1e-12)
    np.testing.assert_allclose(prop.sparse(batch, "inputs").dense().exp().numpy(), _row_normalised(walks), atol=1e-12)
    binary = Propagate(("knn", {"k": 3}), steps=3, binarize=True)
    expected_bin = _row_normalised((walks > 0).astype(float))
    np.testing.assert_allclose(binary(batch, key="inputs").exp().numpy(), expected_bin, atol=1e-12)
    np.testing.assert_allclose(binary.sparse(batch, "inputs").dense().exp().numpy(), expected_bin, atol=1e-12)
    # debiased sparse structure equals the dense debias
    deb = Debias(mix, 0.6)
    np.testing.assert_allclose(deb.sparse(batch, "inputs").dense().numpy(), deb(batch, key="inputs").numpy(), atol=1e-12)


def test_prototype_is_a_learnable_class_softmax() -> None:
    batch = _batch()
    proto = ib.kernel("prototype", num_classes=5, dim=4, temperature=0.5)
    assert [name for name, _ in proto.named_parameters()] == ["weight"]
    logits = batch["embeddings"] @ proto.weight.double().T / 0.5
    np.testing.assert_allclose(proto(batch).detach().numpy(), torch.log_softmax(logits, 1).detach().numpy(), atol=1e-12)
    with pytest.raises(KernelError, match="dimension"):
        ib.kernel("prototype", num_classes=5, dim=3)(batch)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(KernelError, match="metric"):
        ib.kernel("gaussian", metric="manhattan")
    with pytest.raises(KernelError, match="temperature"):
        ib.kernel("cosine", temperature=0.0)
    with pytest.raises(KernelError, match="alpha"):
        Debias("augmentation", 1.5)
    with pytest.raises(KeyError, match="temperature"):
        ib.kernel("cosine", temprature=0.1)
    with pytest.raises(DataError, match="embeddings"):
        ib.kernel("cosine")({"inputs": torch.zeros(3, 2)})


def test_registered_kernels_document_their_parameters() -> None:
    reg = ib.get_registry()
    for name in ["gaussian", "student_t", "cosine", "knn", "label", "augmentation", "cluster", "prototype",
                 "uniform", "mix", "debias", "propagate"]:
        comp = reg.get("kernel", name)
        assert comp.description, name
        assert all(p.type != "any" for p in comp.params), (name, comp.params)
    params = {p.name: p for p in reg.get("kernel", "gaussian").params}
    assert params["sigma"].default == 1.0 and params["perplexity"].default is None


@pytest.mark.parametrize("spec", SQUARE_SPECS + [("label", {"to": "classes", "num_classes": 3})], ids=lambda s: s[0] + str(sorted(s[1])))
def test_kernels_move_like_modules(spec) -> None:
    # an attribute or method shadowing nn.Module.to / ._apply would break .to(), .double(), .cuda()
    kernel = ib.kernel(spec).to(torch.float64)
    assert kernel.double() is kernel
    loss = ib.ICon(kernel, "cosine" if not kernel.rectangular else ("prototype", {"num_classes": 3, "dim": 4}),
                   p_debias=0.3, q_debias=0.2).to(torch.float64)
    assert torch.isfinite(loss(_batch()))
