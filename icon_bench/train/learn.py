"""The training call behind `Method.run`: train data and graph, model and loss, `fit`, then embed both splits."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from icon_bench.errors import TrialError
from icon_bench.train.build import _make_augment, _needs_graph, graph
from icon_bench.train.heads import MultiHead

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits
    from icon_bench.evaluation.metrics import MethodOutput
    from icon_bench.train.recipe import Method
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
    """Train on ``data.x_train`` and embed (and cluster) both splits."""
    from icon_bench.evaluation.metrics import MethodOutput
    from icon_bench.train.trainer import (
        TrainSettings,
        fit,
        resolve_device,
        seed_everything,
    )

    recipe = method.with_overrides(overrides)
    dev = resolve_device(device)
    settings = TrainSettings.from_dict(recipe.settings)
    seed_everything(seed)
    opts = recipe.options
    transductive = bool(opts.get("transductive"))
    train_data, x_all = _train_data(data, recipe, settings, transductive, dev)

    heads = int(opts.get("heads", 1) or 1)
    if heads < 1:
        raise TrialError(f"settings.heads must be >= 1, got {heads}")
    model = recipe.build_model(data, n_rows=x_all.shape[0], init_rows=x_all, heads=heads).to(dev)
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

    z_train, z_test, info = _embed(
        result.model, loss_fn, data, train_data, x_all, settings, seed, augment, transductive, dev, heads
    )
    c_train = c_test = None
    if recipe.output == "clusters":
        c_train, c_test = z_train.argmax(1), z_test.argmax(1)
    return MethodOutput(
        train_embeddings=z_train.cpu(),
        test_embeddings=z_test.cpu(),
        train_clusters=None if c_train is None else c_train.cpu(),
        test_clusters=None if c_test is None else c_test.cpu(),
        history=result.history,
        info={
            "epochs": result.epochs,
            "steps": result.steps,
            "stop_reason": "completed",
            "train_loop_s": train_s,
            "settings": settings.to_dict(),
            "recipe": recipe.resolved(),
            "model_parameters": sum(p.numel() for p in model.parameters()),
            **info,
        },
    )


def _train_data(
    data: DataSplits, recipe: Method, settings: TrainSettings, transductive: bool, dev: torch.device
) -> tuple[TrainData, Tensor]:
    """The points to train on (train, or train and test for transductive lookups) with their kNN graph."""
    from icon_bench.train.trainer import TrainData

    x_train, y_train = data.x_train, data.y_train
    if transductive:
        # Lookup models have one row per point, so train and test points are embedded together.
        x_all = torch.cat([data.x_train, data.x_test])
        y_all = torch.cat([data.y_train, data.y_test])
    else:
        x_all, y_all = x_train, y_train
    knn = None
    if settings.neighbors > 0 or _needs_graph(recipe):
        knn = graph(data, recipe, transductive)
    return TrainData(x_all.float(), y_all.long(), knn).to(dev), x_all


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
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Both splits' embeddings from the trained model (the lowest-loss head's slice with several heads)."""
    from icon_bench.train.trainer import embed

    n_train = data.x_train.shape[0]
    if transductive:
        z = embed(final, train_data.x, torch.arange(x_all.shape[0], device=dev))
        z_train, z_test = z[:n_train], z[n_train:]
    else:
        z_train = embed(final, train_data.x, torch.arange(n_train, device=dev))
        x_test = data.x_test.float().to(dev)
        z_test = embed(final, x_test, torch.arange(x_test.shape[0], device=dev))
    info: dict[str, Any] = {}
    if isinstance(loss_fn, MultiHead):
        head_losses = loss_fn.evaluate_heads(final, train_data, settings, seed=seed, augment=augment)
        best = int(torch.argmin(head_losses))
        z_train, z_test = loss_fn.head(z_train, best), loss_fn.head(z_test, best)
        info = {"heads": heads, "selected_head": best, "head_losses": head_losses.tolist()}
    return z_train, z_test, info
