"""The training call behind `Method.run`: train data and graph, model and loss, `fit`, then embed every split."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from icon_bench.errors import TrialError
from icon_bench.hooks.registry import split_spec
from icon_bench.train.build import Method, _make_augment, _needs_graph, graph, needs_labels, propagated, propagates_graph
from icon_bench.train.heads import MultiHead, OneHead

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits
    from icon_bench.evaluation.metrics import MethodOutput
    from icon_bench.train.trainer import TrainData, TrainSettings


def run(
    method: Method,
    data: DataSplits,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> MethodOutput:
    """Train on ``data.x_train`` and embed (and cluster) the train, val and test splits."""
    from icon_bench.evaluation.metrics import MethodOutput
    from icon_bench.train.trainer import (
        TrainSettings,
        fit,
        resolve_device,
        seed_everything,
    )

    recipe = method.with_overrides(overrides)
    unlabelled = data.meta.get("unlabelled_rows")
    if unlabelled and needs_labels(recipe):
        raise TrialError(
            f"method {method.name!r} trains on labels, and {unlabelled} train rows of dataset {data.name!r} have none "
            "(unlabeled: true); drop unlabeled or use a method that trains without labels (simclr, ...)"
        )
    dev = resolve_device(device)
    settings = TrainSettings.from_dict(recipe.settings)
    seed_everything(seed)
    opts = recipe.options
    # A dataset loaded transductively already trains on every row (its test split is the train
    # rows), so a lookup model must not append them a second time.
    transductive = bool(opts.get("transductive")) and not data.meta.get("transductive")
    train_data, x_all, graph_info = _train_data(data, recipe, settings, transductive, dev)

    heads = int(opts.get("heads", 1) or 1)
    if heads < 1:
        raise TrialError(f"settings.heads must be >= 1, got {heads}")
    init_rows = x_all if data.pixels is None or split_spec(recipe.model)[0] != "lookup" else data.pixels.rows(x_all)
    model = recipe.build_model(data, n_rows=x_all.shape[0], init_rows=init_rows, heads=heads).to(dev)
    loss_fn = _loss(recipe, data, heads, dev)
    augment = _make_augment(opts.get("augment"), data, settings.views)
    if settings.views > 1 and augment is None and recipe.p.get("name") == "augmentation":
        raise TrialError(
            f"method {method.name!r} with {settings.views} views needs an augmentation; set "
            "settings.augment to 'auto' or to Augmenter parameters"
        )
    start = time.perf_counter()
    result = fit(model, loss_fn, train_data, settings, seed=seed, augment=augment, progress=progress, desc=method.name)
    train_s = time.perf_counter() - start

    z = _embed(result.model, loss_fn, data, train_data, x_all, settings, seed, augment, transductive, dev, heads)
    info = z.pop("info")
    clusters = {k: v.argmax(1).cpu() if recipe.output == "clusters" else None for k, v in z.items()}
    return MethodOutput(
        train_embeddings=z["train"].cpu(),
        test_embeddings=z["test"].cpu(),
        train_clusters=clusters["train"],
        test_clusters=clusters["test"],
        val_embeddings=z["val"].cpu(),
        val_clusters=clusters["val"],
        history=result.history,
        info={
            "epochs": result.epochs,
            "steps": result.steps,
            "stop_reason": "completed",
            "train_loop_s": train_s,
            "settings": settings.to_dict(),
            "recipe": recipe.resolved(),
            "model_parameters": sum(p.numel() for p in model.parameters()),
            **({"graph": graph_info} if graph_info else {}),
            **info,
        },
    )


def _train_data(
    data: DataSplits, recipe: Method, settings: TrainSettings, transductive: bool, dev: torch.device
) -> tuple[TrainData, Tensor, dict[str, Any] | None]:
    """The points to train on (train, or train, val and test for transductive lookups), their kNN graph and its record."""
    from icon_bench.train.trainer import TrainData

    # Image rows stay uint8 (data.pixels): TrainData converts each batch, not the whole split here.
    x_train, y_train = data.stored("train"), data.y_train
    if transductive:
        # Lookup models have one row per point, so every split's points are embedded together.
        x_all = torch.cat([x_train, data.stored("val"), data.stored("test")])
        y_all = torch.cat([data.y_train, data.y_val, data.y_test])
    else:
        x_all, y_all = x_train, y_train
    knn = weights = info = None
    if settings.neighbors > 0 or _needs_graph(recipe):
        knn, info = graph(data, recipe, transductive, dev)
        if propagates_graph(recipe):
            knn, weights, info["propagation"] = propagated(recipe, data, knn)
    rows = x_all if data.pixels is not None else x_all.float()
    return TrainData(rows, y_all.long(), knn, data.pixels, weights).to(dev), x_all, info


def _loss(recipe: Method, data: DataSplits, heads: int, dev: torch.device) -> nn.Module:
    """The recipe's loss, on the device when it has state, summed over the heads when there are several."""
    loss_fn = recipe.build_loss(data)
    if any(True for _ in loss_fn.parameters()) or any(True for _ in loss_fn.buffers()):
        # Only losses with state move (prototypes); parameter-free kernels build on any device.
        loss_fn = loss_fn.to(dev)
    if heads > 1:
        loss_fn = MultiHead(loss_fn, heads)
    return loss_fn


def _embed(
    final: nn.Module,
    loss_fn: nn.Module,
    data: DataSplits,
    train_data: TrainData,
    x_all: Tensor,
    settings: TrainSettings,
    seed: int,
    augment: Any,
    transductive: bool,
    dev: torch.device,
    heads: int,
) -> dict[str, Any]:
    """{"train", "val", "test": embeddings, "info": {...}} from the trained model (the lowest-loss head with several)."""
    from icon_bench.train.trainer import embed

    n_train, n_val = len(data.stored("train")), len(data.stored("val"))
    info: dict[str, Any] = {}
    model = final
    if isinstance(loss_fn, MultiHead):
        # The head is chosen on batches drawn from the training data (as before), then only it
        # embeds every row: rows x clusters floats, not rows x heads x clusters.
        head_losses = loss_fn.evaluate_heads(final, train_data, settings, seed=seed, augment=augment)
        best = int(torch.argmin(head_losses))
        model = OneHead(final, loss_fn, best)
        info = {"heads": heads, "selected_head": best, "head_losses": head_losses.tolist()}
    if transductive:
        z = embed(model, train_data.x, torch.arange(x_all.shape[0], device=dev), pixels=train_data.pixels)
        out = {"train": z[:n_train], "val": z[n_train : n_train + n_val], "test": z[n_train + n_val :]}
    else:
        out = {"train": embed(model, train_data.x, torch.arange(n_train, device=dev), pixels=train_data.pixels)}
        for split in ("val", "test"):
            x = data.stored(split)
            if data.meta.get("transductive") and split == "test":
                out[split] = out["train"]  # the test split is the train rows: embed them once
                continue
            x = x.to(dev) if train_data.pixels is not None else x.float().to(dev)
            index = torch.arange(x.shape[0], device=dev)
            out[split] = embed(model, x, index, pixels=train_data.pixels) if len(x) else _empty(out["train"])
    return {**out, "info": info}


def _empty(like: Tensor) -> Tensor:
    """(0, d) embeddings for a split without rows (no val split), without calling the model on nothing."""
    return like.new_empty((0, *like.shape[1:]))
