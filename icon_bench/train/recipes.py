"""The built-in method recipes, by name, and the hook that registers them."""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any, Literal

from icon_bench.hooks.specs import hookimpl
from icon_bench.train.baselines import Baseline
from icon_bench.train.dcl import DCLMethod
from icon_bench.train.recipe import CLUSTER_METRICS, MAP_METRICS, Method
from icon_bench.train.trainer import PositiveInt

if TYPE_CHECKING:
    pass


# -- recipes ------------------------------------------------------------------------------------
#: Full-batch Adam on the table; digits reaches 0.955 test 10-NN accuracy in 2-D after 300 steps.
#: With the PCA start nothing here draws a random number, so the map recipes are `deterministic`:
#: the runner runs them once per configuration (two seeds gave identical maps, 1 thread).
_MAP_SETTINGS = {"epochs": 300, "batch_size": None, "lr": 1.0, "lr_step": 0, "check_every": 50}
_CONTRASTIVE = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "views": 2}
_CLUSTER = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "neighbors": 2}
#: Ten heads on one trunk, the lowest-loss one reported, and a cosine head (temperature 0.05):
#: on digits these lift a single plain head from about 0.70 to about 0.84 Hungarian accuracy.
_CLUSTER_OPTIONS = {"graph_k": 10, "graph_metric": "euclidean", "heads": 10, "head_temperature": 0.05, "head_dim": 64}


def _recipes() -> dict[str, Method | Baseline]:
    """Every built-in recipe, by name, with its defaults (what users get without overrides)."""
    return {**_map_recipes(), **_embedding_recipes(), **_cluster_recipes(), **_other_recipes()}


def _map_recipes() -> dict[str, Method | Baseline]:
    """The 2-D map recipes (SNE, t-SNE) on a PCA-initialised lookup table."""
    return {
        "sne": Method(
            "sne",
            p={"name": "gaussian", "perplexity": 30.0},
            q={"name": "gaussian", "sigma": 0.7071067811865476},
            model={"name": "lookup"},
            out_dim=2,
            settings=dict(_MAP_SETTINGS),
            metrics=list(MAP_METRICS),
            options={"transductive": True, "pca_init": True, "pca_std": 1e-4, "cache_p": True},
            deterministic=True,
            description="SNE: perplexity-calibrated Gaussian p on inputs, Gaussian q on a 2-D lookup embedding",
        ),
        "tsne": Method(
            "tsne",
            p={"name": "gaussian", "perplexity": 30.0},
            q={"name": "student_t", "dof": 1.0},
            model={"name": "lookup"},
            out_dim=2,
            settings=dict(_MAP_SETTINGS),
            metrics=list(MAP_METRICS),
            options={"transductive": True, "pca_init": True, "pca_std": 1e-4, "cache_p": True},
            deterministic=True,
            description="t-SNE: perplexity-calibrated Gaussian p, Student-t (dof 1) q, PCA-initialised 2-D lookup",
        ),
    }


def _embedding_recipes() -> dict[str, Method | Baseline]:
    """The representation-learning recipes: contrastive, supervised contrastive, cross-entropy."""
    return {
        "simclr": Method(
            "simclr",
            p={"name": "augmentation"},
            q={"name": "cosine", "temperature": 0.5},
            settings=dict(_CONTRASTIVE),
            options={"augment": "auto"},
            description="SimCLR / InfoNCE: augmentation p, cosine-softmax q (NT-Xent)",
        ),
        "t-simclr": Method(
            "t-simclr",
            p={"name": "augmentation"},
            q={"name": "student_t", "dof": 1.0},
            settings=dict(_CONTRASTIVE),
            options={"augment": "auto"},
            description="t-SimCLR: augmentation p, Student-t q on the embedding",
        ),
        "supcon": Method(
            "supcon",
            p={"name": "label"},
            q={"name": "cosine", "temperature": 0.1},
            # MNIST with the small CNN: one epoch already gives 0.987 linear probe / 0.985 kNN.
            settings={"epochs": 3, "batch_size": 512, "lr": 1e-3, "lr_step": 1},
            options={"augment": None},
            description="Supervised contrastive: label p, cosine-softmax q (views optional)",
        ),
        "cross_entropy": Method(
            "cross_entropy",
            p={"name": "label", "to": "classes", "num_classes": "$num_classes"},
            q={"name": "prototype", "num_classes": "$num_classes", "dim": "$dim", "temperature": 1.0},
            settings={"epochs": 10, "batch_size": 512, "lr": 1e-3, "lr_step": 4},
            description="Cross-entropy: label-to-class p, prototype q (softmax classifier)",
        ),
    }


def _cluster_recipes() -> dict[str, Method | Baseline]:
    """The clustering recipes: a cluster q over a kNN-graph (and views) p."""
    return {
        "pmi": Method(
            "pmi",
            p={"name": "knn", "k": 10, "scope": "graph"},
            q={"name": "cluster"},
            model={"name": "mlp", "hidden": 256, "layers": 1},
            out_dim="$num_classes",
            settings=dict(_CLUSTER),
            metrics=list(CLUSTER_METRICS),
            options=dict(_CLUSTER_OPTIONS),
            output="clusters",
            description="TEMI-style clustering: global-kNN p, cluster q, MLP head on (frozen) features",
        ),
        "debiased_infonce_clustering": Method(
            "debiased_infonce_clustering",
            p={
                "name": "mix",
                "kernels": [{"name": "augmentation"}, {"name": "knn", "k": 10, "scope": "graph"}],
                "weights": [0.5, 0.5],
            },
            q={"name": "cluster"},
            model={"name": "mlp", "hidden": 256, "layers": 1},
            out_dim="$num_classes",
            settings=dict(_CLUSTER),
            # alpha 0.2 (the low end of I-Con's 0.2-0.8) over 0.5: digits 0.815 vs 0.804 (3 seeds),
            # MNIST PCA-50 at 16 epochs 0.888 vs 0.805 Hungarian accuracy (docs/results.md).
            p_debias=0.2,
            q_debias=0.2,
            metrics=list(CLUSTER_METRICS),
            options={**_CLUSTER_OPTIONS, "augment": "auto"},
            output="clusters",
            description="I-Con debiased InfoNCE clustering: debias(mix(views, kNN graph)) p, debias(cluster) q",
        ),
    }


def _other_recipes() -> dict[str, Method | Baseline]:
    """DCL with its own loss, and the non-learned baselines."""
    return {
        "dcl": DCLMethod(
            "dcl",
            p={"name": "augmentation"},
            q={"name": "cosine", "temperature": 0.5, "tau_plus": 0.1},
            settings=dict(_CONTRASTIVE),
            options={"augment": "auto"},
            description="Debiased contrastive learning (Chuang et al.): augmentation p, cosine q, debiased negatives",
        ),
        "kmeans": Baseline(
            "kmeans",
            {"n_clusters": None, "n_init": 10},
            {"n_clusters": PositiveInt | None, "n_init": PositiveInt},
            description="k-means (scikit-learn, seeded); test points by kmeans.predict",
        ),
        "spectral": Baseline(
            "spectral",
            {"n_clusters": None, "n_neighbors": 10, "assign_labels": "kmeans"},
            {
                "n_clusters": PositiveInt | None,
                "n_neighbors": PositiveInt,
                "assign_labels": Literal["kmeans", "discretize", "cluster_qr"],
            },
            description="Spectral clustering on a kNN affinity (scikit-learn); fit on train, test by kNN vote",
        ),
    }


RECIPES: dict[str, Method | Baseline] = _recipes()
ALIASES: dict[str, tuple[str, ...]] = {"simclr": ("infonce",)}


def get_recipe(name: str) -> Method | Baseline:
    """A fresh copy of a built-in recipe."""
    return copy.deepcopy(RECIPES[name])


#: Keyword arguments of a method factory that are spec sections; any other keyword is a setting.
_SECTIONS = ("p", "q", "model", "divergence")


def _factory(name: str) -> Any:
    """The registered factory of recipe `name`: keywords are overrides, and its signature lists the real defaults.

    ``icon_bench.method("pmi", epochs=5, p={"k": 20})`` and a suite's ``settings`` / ``p.k`` reach
    the same ``with_overrides``. The signature (what `icon-bench plugins` and the registry's
    parameter check read) is the recipe's own `parameters()`: kernels with their values, epochs,
    heads, lr_step, ... instead of a generic ``p: dict | None = None``.
    """
    recipe = RECIPES[name]

    def factory(**params: Any) -> Method | Baseline:
        spec: dict[str, Any] = {key: params.pop(key) for key in _SECTIONS if key in params}
        spec["settings"] = params  # trainer settings and method options, by name
        return get_recipe(name).with_overrides(spec)

    fields = [
        inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=copy.deepcopy(value), annotation=kind)
        for key, (value, kind) in recipe.parameters().items()
    ]
    factory.__signature__ = inspect.Signature(fields)  # type: ignore[attr-defined]
    factory.__doc__ = recipe.description
    factory.__name__ = name.replace("-", "_")
    return factory


@hookimpl
def register_methods(register: Any) -> None:
    """The built-in methods."""
    for name, recipe in RECIPES.items():
        register(name, _factory(name), description=recipe.description, aliases=ALIASES.get(name, ()))
