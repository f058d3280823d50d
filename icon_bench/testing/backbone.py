"""The conformance check of backbones: description, frozen model, preprocessing and features."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from icon_bench.hooks.registry import Registry
from icon_bench.testing.common import _build, _builder, _fail

__all__ = ["check_backbone"]


def check_backbone(
    spec_or_backbone: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    image_size: tuple[int, int] = (40, 52),
) -> Any:
    """Build a backbone (name/spec, factory or instance) and check its contract; returns the backbone.

    `describe()` is JSON with plugin, model and preprocessing; `tag` a non-empty string; `load("cpu")`
    an eval-mode module with no trainable parameters; `preprocess` maps uint8 colour and grey images
    (B, C, H, W) of any size to one float (B, 3, S, S) shape; features (B, D) are finite and the same
    on a second call.
    """
    label, build = _builder("backbone", spec_or_backbone, params, registry)
    backbone = _build(label, build, seed)
    for attr in ("describe", "load", "preprocess"):
        if not callable(getattr(backbone, attr, None)):
            raise _fail(label, "is a Backbone", f"{type(backbone).__name__} has no callable {attr!r}")
    try:
        desc = json.loads(json.dumps(backbone.describe()))
    except (TypeError, ValueError) as exc:
        raise _fail(label, "JSON description", f"describe() is not JSON: {exc}") from exc
    missing = [k for k in ("plugin", "model", "preprocessing") if not desc.get(k)]
    if missing:
        raise _fail(label, "JSON description", f"describe() lacks {missing}")
    if not isinstance(getattr(backbone, "tag", None), str) or not backbone.tag:
        raise _fail(label, "a tag", "backbone.tag names it in report labels; it must be a non-empty string")
    model = backbone.load("cpu")
    if not isinstance(model, torch.nn.Module) or model.training:
        raise _fail(label, "frozen model", "load() must give an nn.Module in eval mode")
    if any(p.requires_grad for p in model.parameters()):
        raise _fail(label, "frozen model", "load() must turn gradients off")
    gen = torch.Generator().manual_seed(seed)
    shapes, feats = set(), []
    for channels in (3, 1):
        images = torch.randint(0, 256, (2, channels, *image_size), generator=gen, dtype=torch.uint8)
        x = backbone.preprocess(images)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or x.shape[:2] != (2, 3):
            raise _fail(label, "preprocessing", f"{channels}-channel images gave {getattr(x, 'shape', x)}, not (2, 3, S, S)")
        shapes.add(tuple(x.shape))
        try:
            with torch.no_grad():
                z, again = model(x), model(x)
        except Exception as exc:
            raise _fail(label, "features", f"the model fails on its own preprocessing's output {tuple(x.shape)}: {exc}") from exc
        if z.dim() != 2 or len(z) != 2 or not bool(torch.isfinite(z).all()):
            raise _fail(label, "features", f"model gave {tuple(z.shape)} (finite: {bool(torch.isfinite(z).all())}), not finite (B, D)")
        if not torch.equal(z, again):
            raise _fail(label, "deterministic", "two forward passes on the same images differ")
        feats.append(z)
    if len(shapes) != 1:
        raise _fail(label, "preprocessing", f"colour and grey images gave different shapes {sorted(shapes)}")
    return backbone
