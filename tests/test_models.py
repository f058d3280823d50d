"""Models: output shapes for every input kind, `takes`, the lookup table and its PCA initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import icon_bench
from icon_bench.train.models import pca_init

CASES = [
    # (model, in_shape, params, batch input shape)
    ("linear", (10,), {}, (4, 10)),
    ("linear", (1, 8, 8), {}, (4, 1, 8, 8)),
    ("mlp", (10,), {"hidden": 16}, (4, 10)),
    ("mlp", (3, 8, 8), {"hidden": 16, "layers": 3, "batchnorm": False, "dropout": 0.1}, (4, 3, 8, 8)),
    ("cnn", (64,), {"width": 4, "image_shape": (1, 8, 8)}, (4, 64)),
    ("cnn", (1, 28, 28), {"width": 4}, (4, 1, 28, 28)),
    ("cnn", (3, 32, 32), {"width": 4}, (4, 3, 32, 32)),
    ("resnet", (1, 28, 28), {"depth": 8, "width": 4}, (2, 1, 28, 28)),
    ("resnet", (3, 32, 32), {"depth": 18, "width": 4}, (2, 3, 32, 32)),
    ("resnet", (784,), {"depth": 10, "width": 4, "image_shape": (1, 28, 28)}, (2, 784)),
]


@pytest.mark.parametrize(("name", "in_shape", "params", "x_shape"), CASES)
def test_output_shapes_and_gradients(name: str, in_shape: tuple, params: dict, x_shape: tuple) -> None:
    torch.manual_seed(0)
    model = icon_bench.model(name, in_shape=in_shape, out_dim=7, **params)
    assert model.takes == "inputs"
    out = model(torch.randn(x_shape))
    assert out.shape == (x_shape[0], 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bad_shapes_are_clear() -> None:
    with pytest.raises(ValueError, match="needs image_shape"):
        icon_bench.model("cnn", in_shape=(64,), out_dim=3)
    with pytest.raises(ValueError, match="image_shape"):
        icon_bench.model("cnn", in_shape=(64,), out_dim=3, image_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="depth"):
        icon_bench.model("resnet", in_shape=(3, 32, 32), out_dim=3, depth=7)


def test_lookup_takes_indices_and_learns_rows() -> None:
    init = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    model = icon_bench.model("lookup", in_shape=(5,), out_dim=2, num_points=6, init=init)
    assert model.takes == "index"
    index = torch.tensor([4, 0, 4])
    out = model(index)
    assert torch.equal(out, init[index])
    out.sum().backward()
    # Only the looked-up rows get gradient; row 4 twice.
    assert model.weight.grad[:, 0].tolist() == [1, 0, 0, 0, 2, 0]
    init[0, 0] = 99.0
    assert model.weight[0, 0] == 0.0  # the table owns a copy
    with pytest.raises(ValueError, match="init has shape"):
        icon_bench.model("lookup", in_shape=(5,), out_dim=3, num_points=6, init=init)
    rand = icon_bench.model("lookup", in_shape=(5,), out_dim=3, num_points=1000)
    assert 5e-5 < float(rand.weight.detach().std()) < 2e-4


def test_pca_init_matches_sklearn() -> None:
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(80, 6)) * np.arange(1, 7)).float()
    raw = pca_init(x, 2, std=None).double().numpy()
    ref = PCA(2, svd_solver="full").fit_transform(x.double().numpy())
    signs = np.sign((raw * ref).sum(0))
    np.testing.assert_allclose(raw, ref * signs, atol=1e-4)
    scaled = pca_init(x, 2)
    assert abs(float(scaled[:, 0].std()) - 1e-4) < 1e-8
    assert torch.equal(pca_init(x, 2), scaled)
