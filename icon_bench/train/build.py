"""Building a recipe's pieces for a dataset: the loss, the model, the kNN graph and the augmentation."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from icon_bench.errors import TrialError
from icon_bench.hooks.registry import create, split_spec
from icon_bench.loss.objective import ICon
from icon_bench.train.heads import CosineHead, FullBatchCache

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits


class Method(Protocol):
    """What building and training read of a recipe (train/recipe.py's `Method`, which binds them as methods).

    A protocol, not an import of recipe.py: recipe.py imports this module and learn.py to bind
    `build_loss`, `build_model` and `run`, so naming its class here would close an import circle.
    """

    name: str
    p: dict[str, Any]
    q: dict[str, Any]
    divergence: Any
    model: dict[str, Any]
    out_dim: Any
    settings: dict[str, Any]
    p_debias: float
    q_debias: float
    p_propagate: int
    options: dict[str, Any]
    output: str

    def resolved(self) -> dict[str, Any]: ...
    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Method: ...
    def embedding_dim(self, data: DataSplits) -> int: ...
    def build_model(self, data: DataSplits, n_rows: int, init_rows: Tensor | None = None, heads: int = 1) -> nn.Module: ...
    def build_loss(self, data: DataSplits, dim: int | None = None) -> nn.Module: ...


def _context(data: DataSplits, dim: int) -> dict[str, Any]:
    return {"$num_classes": int(data.num_classes), "$dim": int(dim), "$n": len(_rows(data))}


def _rows(data: DataSplits) -> Tensor:
    """The train rows as stored, for their shape: reading x_train would convert uint8 pixels to float32."""
    stored = getattr(data, "stored", None)  # plugins may hand a DataSplits-like object without it
    return stored("train") if stored is not None else data.x_train


def _resolve(value: Any, ctx: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value in ctx:
        return ctx[value]
    if isinstance(value, Mapping):
        return {k: _resolve(v, ctx) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, ctx) for v in value)
    return value


def _kernel_names(spec: Any) -> list[str]:
    name, params = split_spec(spec)
    names = [name]
    for sub in params.get("kernels") or ():
        names += _kernel_names(sub)
    return names


def _needs_graph(recipe: Method) -> bool:
    """True when p reads the global kNN graph (a knn kernel with scope="graph", possibly inside mix)."""

    def walk(spec: Any) -> bool:
        name, params = split_spec(spec)
        if name == "knn" and params.get("scope") == "graph":
            return True
        return any(walk(s) for s in params.get("kernels") or ())

    return walk(recipe.p)


def needs_labels(recipe: Any) -> bool:
    """True when the recipe's p reads the labels (a label kernel, possibly inside mix): supcon, cross_entropy."""
    p = getattr(recipe, "p", None)
    if not p:
        return False
    return "label" in _kernel_names(p)


def propagates_graph(recipe: Method) -> bool:
    """True when ``p.propagate`` walks the global kNN graph: p reads it, so the walks are taken on
    the whole graph (a sparse matrix power, :func:`propagated`) instead of within each batch."""
    return int(recipe.p_propagate) > 0 and _needs_graph(recipe)


def propagated(recipe: Method, data: DataSplits, knn: Tensor) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The global graph's walks of 1..p.propagate steps: (n, m) columns, their weights and a record.

    Built from the first k columns of ``knn``, k the graph kernel's own (as the kernel reads it);
    ``propagate_keep`` bounds m (data/propagate.py says what is cut and the record how much).
    """
    from icon_bench.data.propagate import propagate_graph
    from icon_bench.loss.graphs import KNN

    p = create("kernel", _resolve(recipe.p, _context(data, recipe.embedding_dim(data))))
    ks = {m.k for m in p.modules() if isinstance(m, KNN) and m.scope == "graph"}
    if len(ks) != 1:
        raise TrialError(f"p.propagate on the global graph needs one graph kernel's k, got {sorted(ks)}")
    k = min(ks.pop(), int(knn.shape[1]))
    t0 = time.perf_counter()
    cols, weights, record = propagate_graph(knn[:, :k], recipe.p_propagate, recipe.options.get("propagate_keep"))
    return cols, weights, {**record, "k": k, "seconds": round(time.perf_counter() - t0, 3)}


def _make_augment(kind: Any, data: DataSplits, views: int) -> Any:
    """The batched view augmentation: None/"none" (off), "auto" (on when views > 1), or Augmenter parameters."""
    if kind in (None, False, "none"):
        return None
    from icon_bench.data.augment import augmenter_for

    if kind in (True, "auto"):
        if views <= 1:
            return None
        if getattr(data, "views_train", None) is not None:
            from icon_bench.data.augment import StoredViews

            return StoredViews(data.views_train)  # a feature cache's views of each train row
        return augmenter_for(data.meta, _rows(data).shape[1:])
    if isinstance(kind, Mapping):
        return augmenter_for(data.meta, _rows(data).shape[1:], **dict(kind))
    raise TrialError(f"settings.augment must be null, 'auto' or a mapping of Augmenter parameters, got {kind!r}")


def build_loss(recipe: Method, data: DataSplits, dim: int | None = None) -> nn.Module:
    """The ICon loss of this recipe for ``data`` (placeholders resolved)."""
    ctx = _context(data, dim if dim is not None else recipe.embedding_dim(data))
    p = create("kernel", _resolve(recipe.p, ctx))
    settings = recipe.settings
    if (
        recipe.options.get("cache_p")
        and settings.get("batch_size", 256) is None
        and settings.get("views", 1) == 1
        and not settings.get("neighbors", 0)
    ):
        p = FullBatchCache(p)
    q = create("kernel", _resolve(recipe.q, ctx))
    div = create("divergence", recipe.divergence)
    # Walks on the global graph are in its weights already (learn._train_data); others walk the batch.
    steps = 0 if propagates_graph(recipe) else recipe.p_propagate
    return ICon(p, q, div, p_debias=recipe.p_debias, q_debias=recipe.q_debias, p_propagate=steps)


def embedding_dim(recipe: Method, data: DataSplits) -> int:
    """The width of the embedding this recipe trains for ``data``."""
    return int(_resolve(recipe.out_dim, _context(data, 0)))


def build_model(
    recipe: Method, data: DataSplits, n_rows: int, init_rows: Tensor | None = None, heads: int = 1
) -> nn.Module:
    """The model, with ``"auto"`` meaning the small CNN for image data and an MLP for vectors.

    A lookup table gets one row per point (``n_rows``) and, with the ``pca_init`` option, the
    PCA scores of ``init_rows`` as its start (t-SNE's initialisation).
    """
    from icon_bench.train.models import pca_init

    name, params = split_spec(recipe.model)
    params = _resolve(params, _context(data, 0))
    image_shape = data.image_shape
    if name == "auto":
        name = "cnn" if image_shape is not None else "mlp"
    in_shape = tuple(_rows(data).shape[1:])
    dim = recipe.embedding_dim(data)
    head_t = recipe.options.get("head_temperature") if recipe.output == "clusters" else None
    if name == "lookup":
        params.setdefault("num_points", n_rows)
        if recipe.options.get("pca_init") and init_rows is not None and "init" not in params:
            params["init"] = pca_init(init_rows, dim, std=float(recipe.options.get("pca_std", 1e-4)))
    elif name in ("cnn", "resnet") and _rows(data).dim() == 2 and image_shape is not None:
        params.setdefault("image_shape", tuple(image_shape))
    if head_t:
        # Cluster logits from cosine similarity to normalised prototypes (DINO/TEMI heads): the
        # temperature bounds the logits, so assignments stay soft long enough to find good clusters.
        head_dim = int(recipe.options.get("head_dim", 64))
        trunk = create("model", {"name": name, **params}, in_shape=in_shape, out_dim=head_dim)
        return CosineHead(trunk, head_dim, dim * heads, float(head_t))
    return create("model", {"name": name, **params}, in_shape=in_shape, out_dim=dim * heads)


def graph(
    data: DataSplits, recipe: Method, transductive: bool, device: str | torch.device | None = None
) -> tuple[Tensor, dict[str, Any]]:
    """The dataset's global kNN graph, or the shared cached one over the (flattened) training inputs.

    Returns the graph and what the row records of it: k, metric, where it came from (dataset,
    memory, disk or computed) and the seconds it took here. A miss computes on ``device``.
    """
    from icon_bench.data.graph import global_knn, graph_record

    t0 = time.perf_counter()
    if data.knn_train is not None and not transductive:
        step = next((s for s in (data.meta or {}).get("preprocessing", ()) if s.get("step") == "knn"), {})
        metric = step.get("metric") or (data.meta or {}).get("knn_graph", {}).get("metric")
        info = {"k": int(data.knn_train.shape[1]), "metric": metric, "source": "dataset"}
        return data.knn_train.long(), {**info, "seconds": time.perf_counter() - t0}
    k = int(recipe.options.get("graph_k", 10))
    parts = [data.x_train, data.x_val, data.x_test] if transductive else [data.x_train]
    parts = [p for p in parts if len(p)]
    n = sum(len(p) for p in parts)
    if k >= n:
        raise TrialError(f"graph_k={k} needs more than {n} training points")
    metric = str(recipe.options.get("graph_metric", "euclidean"))
    knn, source, key = global_knn(parts, k, metric, device=device)
    record = {"k": k, "metric": metric, "source": source, "seconds": time.perf_counter() - t0}
    return knn, {**record, "search": graph_record(key)}
