"""Tests of the method recipes: registration, overrides reaching the components, one tiny run each."""

from __future__ import annotations

import pytest
import torch

import icon_bench
from icon_bench.data.load import load_dataset
from icon_bench.errors import TrialError, UnknownNameError
from icon_bench.loss.pairwise import Cosine
from icon_bench.loss.transforms import Debias, Propagate
from icon_bench.train.baselines import Baseline
from icon_bench.train.dcl import DebiasedContrastiveLoss
from icon_bench.train.recipe import Method
from icon_bench.train.recipes import RECIPES, get_recipe

BLOBS = {"name": "blobs", "n_samples": 100, "n_features": 6, "centers": 4, "seed": 0}
LEARNED = [n for n, r in RECIPES.items() if isinstance(r, Method)]


@pytest.fixture(scope="module")
def blobs() -> object:
    return load_dataset(BLOBS)


@pytest.fixture(scope="module")
def digits() -> object:
    return load_dataset({"name": "digits", "subset": 60})


def test_every_recipe_is_registered_with_a_description() -> None:
    reg = icon_bench.get_registry()
    names = set(reg.names("method"))
    assert set(RECIPES) <= names
    assert reg.get("method", "infonce").name == "simclr"
    for name in RECIPES:
        assert reg.get("method", name).description
        assert isinstance(icon_bench.method(name), (Method, Baseline))


def test_q_temperature_reaches_the_icon_kernel(blobs: object) -> None:
    loss = icon_bench.method("simclr").with_overrides({"q": {"temperature": 0.2}}).build_loss(blobs)
    assert isinstance(loss.q, Cosine) and loss.q.temperature == pytest.approx(0.2)
    default = get_recipe("simclr").build_loss(blobs)
    assert default.q.temperature == pytest.approx(0.5)


def test_transforms_divergence_and_kernel_swap(blobs: object) -> None:
    recipe = get_recipe("pmi").with_overrides(
        {"p": {"debias": 0.3, "propagate": 2, "k": 4}, "q": {"debias": 0.4}, "divergence": "tv"}
    )
    loss = recipe.build_loss(blobs)
    assert isinstance(loss.p, Debias) and loss.p.alpha == pytest.approx(0.3)
    # The graph kernel's walks are taken on the whole graph (its weights), not in the batch.
    assert recipe.p_propagate == 2 and not isinstance(loss.p.kernel, Propagate)
    assert loss.p.kernel.k == 4 and loss.p.kernel.scope == "graph"
    in_batch = recipe.with_overrides({"p": {"scope": "batch"}}).build_loss(blobs)
    assert isinstance(in_batch.p.kernel, Propagate) and in_batch.p.kernel.steps == 2
    assert isinstance(loss.q, Debias) and loss.q.alpha == pytest.approx(0.4)
    assert loss.divergence.name == "tv"
    swapped = get_recipe("pmi").with_overrides({"p": {"name": "gaussian", "sigma": 2.0}})
    assert swapped.p == {"name": "gaussian", "sigma": 2.0}  # the old kernel's k does not leak in
    with pytest.raises(TrialError, match="q.propagate"):
        get_recipe("pmi").with_overrides({"q": {"propagate": 2}})
    # The transforms are among the known keys, so a misspelt one gets a suggestion (it listed k, metric, scope).
    with pytest.raises(UnknownNameError, match=r"parameter 'debais' in p kernel 'knn'; did you mean 'debias'\?"):
        get_recipe("pmi").with_overrides({"p": {"debais": 0.6}})
    with pytest.raises(UnknownNameError, match="in q kernel 'cluster'"):
        get_recipe("pmi").with_overrides({"q": {"temperature": 0.5}})
    assert get_recipe("dcl").with_overrides({"q": {"tau_plus": 0.2}}).q["tau_plus"] == 0.2  # a recipe's own key


def test_model_and_settings_overrides(blobs: object) -> None:
    recipe = get_recipe("pmi").with_overrides(
        {"model": {"hidden": 8, "layers": 1}, "settings": {"epochs": 1, "graph_k": 4}}
    )
    model = recipe.build_model(blobs, n_rows=80)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 2
    assert model(torch.zeros(3, 6)).shape == (3, 4)  # out_dim = num_classes for a cluster head
    assert recipe.settings["epochs"] == 1 and recipe.options["graph_k"] == 4
    lin = get_recipe("pmi").with_overrides({"model": {"name": "linear"}}).build_model(blobs, n_rows=80)
    assert lin(torch.zeros(2, 6)).shape == (2, 4)


@pytest.mark.parametrize("name", LEARNED)
def test_each_learned_method_runs_one_tiny_epoch(name: str, blobs: object, digits: object) -> None:
    data = digits if name in ("simclr", "t-simclr", "dcl") else blobs
    overrides = {"settings": {"epochs": 1, "batch_size": 40, "heads": 2}, "model": {}}
    if name in ("sne", "tsne"):
        overrides["settings"] = {"epochs": 1}  # full batch: perplexity 30 needs rows of > 30 points
    if RECIPES[name].model.get("name") in ("auto", "mlp"):
        overrides["model"] = {"name": "mlp", "hidden": 16}
    out = icon_bench.method(name).run(data, seed=0, device="cpu", overrides=overrides)
    n_tr, n_te = len(data.x_train), len(data.x_test)
    dim = RECIPES[name].embedding_dim(data)
    assert out.train_embeddings.shape == (n_tr, dim) and out.test_embeddings.shape == (n_te, dim)
    assert torch.isfinite(out.train_embeddings).all()
    if RECIPES[name].output == "clusters":
        assert out.test_clusters.shape == (n_te,) and out.test_clusters.max() < data.num_classes
    assert len(out.history["loss"]) == 1 and out.info["epochs"] == 1


def test_tsne_pca_init_and_transductive_embedding(blobs: object) -> None:
    out = icon_bench.method("tsne").run(blobs, seed=0, overrides={"settings": {"epochs": 0}})
    # A lookup table holds a row per point of every split (protocol 2's val rows included).
    z = torch.cat([out.train_embeddings, out.val_embeddings, out.test_embeddings])
    x = torch.cat([blobs.x_train, blobs.x_val, blobs.x_test])
    first_pc = torch.linalg.svd(x - x.mean(0), full_matrices=False)[2][0]
    corr = torch.corrcoef(torch.stack([z[:, 0], (x - x.mean(0)) @ first_pc]))[0, 1]
    assert abs(float(corr)) > 0.999 and float(z[:, 0].std()) == pytest.approx(1e-4, rel=1e-3)


def test_tsne_separates_blobs() -> None:
    data = load_dataset({**BLOBS, "n_samples": 200})
    out = icon_bench.method("tsne").run(data, seed=0, overrides={"settings": {"epochs": 60}})
    assert out.history["loss"][-1] < 0.5 * out.history["loss"][0]
    metrics = icon_bench.evaluation.evaluate(out, data, ["knn2d"])
    assert metrics["knn2d"] > 0.95


def test_dcl_loss_prefers_aligned_views() -> None:
    loss = DebiasedContrastiveLoss(temperature=0.5, tau_plus=0.1)
    z = torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    index = torch.arange(8).repeat(2)
    aligned = loss({"embeddings": torch.cat([z, z]), "index": index})
    shuffled = loss({"embeddings": torch.cat([z, z.roll(1, 0)]), "index": index})
    assert aligned < shuffled
    with pytest.raises(TrialError, match="divergence"):
        get_recipe("dcl").with_overrides({"divergence": "tv"}).build_loss(load_dataset(BLOBS))


@pytest.mark.parametrize("name", ["kmeans", "spectral"])
def test_baselines_cluster_both_splits_reproducibly(name: str, blobs: object) -> None:
    a = icon_bench.method(name).run(blobs, seed=0)
    b = icon_bench.method(name).run(blobs, seed=0)
    assert torch.equal(a.test_clusters, b.test_clusters) and a.test_clusters.shape == (len(blobs.x_test),)
    metrics = icon_bench.evaluation.evaluate(a, blobs, ["hungarian"])
    assert metrics["hungarian"] > 0.9  # well-separated blobs


def test_baselines_set_aside_trainer_settings_but_reject_unknown_ones(blobs: object) -> None:
    from icon_bench.errors import UnknownNameError

    plain = icon_bench.method("kmeans").run(blobs, seed=0)
    shared = icon_bench.method("kmeans").run(blobs, seed=0, overrides={"settings": {"epochs": 30, "lr": 1e-3}})
    assert torch.equal(plain.test_clusters, shared.test_clusters)
    assert shared.info["ignored_settings"] == {"epochs": 30, "lr": 1e-3}
    with pytest.raises(UnknownNameError, match="did you mean 'n_init'"):
        icon_bench.method("kmeans").with_overrides({"settings": {"n_inti": 3}})


def test_heads_train_several_clusterings_and_report_the_lowest_loss(blobs: object) -> None:
    overrides = {"settings": {"epochs": 2, "batch_size": 40, "heads": 3}, "model": {"hidden": 16}}
    out = icon_bench.method("pmi").run(blobs, seed=0, overrides=overrides)
    losses = out.info["head_losses"]
    assert len(losses) == 3 and out.info["selected_head"] == min(range(3), key=losses.__getitem__)
    assert len(set(losses)) == 3  # heads are separate clusterings, not copies
    assert out.test_embeddings.shape == (len(blobs.x_test), blobs.num_classes)
    assert torch.equal(out.test_clusters, out.test_embeddings.argmax(1))


def test_full_batch_p_cache_equals_the_kernel() -> None:
    from icon_bench.train.heads import FullBatchCache

    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    kernel = icon_bench.kernel("gaussian", perplexity=10.0)
    cache = FullBatchCache(kernel)
    order = torch.arange(50)
    first = cache({"inputs": x, "index": order}, "inputs")
    assert torch.equal(cache({"inputs": x, "index": order}, "inputs"), first)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    direct = kernel({"inputs": x[perm], "index": perm}, "inputs")
    assert torch.allclose(cache({"inputs": x[perm], "index": perm}, "inputs"), direct, atol=1e-5)


@pytest.mark.parametrize("divergence", ["kl", "tv"])  # the fast path (sparse p) and the dense one
def test_heads_share_one_p_and_equal_separate_losses(divergence: str) -> None:
    from icon_bench.train.heads import MultiHead

    g = torch.Generator().manual_seed(0)
    n, heads, classes = 24, 3, 4
    index = torch.arange(n) % 12  # two views of 12 points
    batch = {"inputs": torch.randn(n, 5, generator=g), "index": index, "labels": torch.zeros(n, dtype=torch.long)}
    loss = icon_bench.ICon("augmentation", "cluster", divergence, p_debias=0.3, q_debias=0.2)
    calls = []
    prepare = loss.prepare_p
    loss.prepare_p = lambda b: calls.append(1) or prepare(b)  # type: ignore[method-assign]
    z = torch.randn(n, heads * classes, generator=g, requires_grad=True)
    total = MultiHead(loss, heads)({**batch, "embeddings": z})
    (grad,) = torch.autograd.grad(total, z)
    assert len(calls) == 1
    z2 = z.detach().clone().requires_grad_(True)
    separate = sum(loss({**batch, "embeddings": z2[:, h * classes : (h + 1) * classes]}) for h in range(heads))
    (grad2,) = torch.autograd.grad(separate, z2)
    assert torch.allclose(total, separate, atol=1e-6) and torch.allclose(grad, grad2, atol=1e-6)
