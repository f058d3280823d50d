"""A trial's memory, estimated before it runs: its data, its model (built on torch's meta device) and a batch's kernels.

An estimate, not a measurement: it is there to refuse at plan time what cannot fit (a model of
5e8 hidden units, a million heads, a forged array header), not to pack trials tightly. What it counts:
- data: the arrays as float32, three times (the file's array, the tensors, a split's copy);
- model: its parameters x 4 copies (weights, gradients, Adam's two moments), counted on torch's
  meta device, where a module allocates nothing, so any plugin model is counted the same way;
- batch: the p and q kernel matrices of one batch (batch_size^2, a handful of them, per head);
- what a method says its fit holds beyond the data (`memory_parts(rows, features, classes)`: the
  baselines' eigensolver basis, labels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

__all__ = ["MemoryEstimate", "estimate_trial", "format_bytes"]

#: float32 copies of the data a trial holds at its peak (array, tensor, split).
_DATA_COPIES = 3
#: Copies of each parameter: weights, gradients and Adam's two moments.
_PARAM_COPIES = 4
#: N x N matrices one step holds per head: log p, log q, their softmax and the gradients.
_KERNEL_MATRICES = 6
#: Rows of a full-batch step's kernel blocks (the structured path's block height, a round figure).
_ROW_BLOCK = 1024
#: Work a trial may ask for: epochs x training rows (1e11 row passes is about a day on one GPU).
MAX_ROW_PASSES = 10**11


@dataclass
class MemoryEstimate:
    """Bytes per part (data, model, batch) and what the model counted; `total` their sum."""

    parts: dict[str, int] = field(default_factory=dict)
    params: int | None = None

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        text = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items() if v)
        if self.params is not None:
            text += f"; {self.params:.3g} model parameters"
        return text


def format_bytes(nbytes: float) -> str:
    """`6.4 GB`, `512 MB`: decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if nbytes < 1000 or unit == "EB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    raise AssertionError


def _model_params(recipe: Any, rows: int, in_shape: tuple[int, ...], num_classes: int, heads: int) -> int | None:
    """Parameters of the recipe's model for data of this shape, built on the meta device (None: cannot tell)."""
    import torch

    from icon_bench.train.recipe import Method

    if not isinstance(recipe, Method):
        return None  # a baseline (scikit-learn) or a plugin method of its own make
    # What build_model reads of the data: shapes, classes and image shape, here as meta tensors.
    x = torch.empty((rows, *in_shape), device="meta")
    data = SimpleNamespace(x_train=x, num_classes=num_classes, image_shape=None, meta={})
    try:
        with torch.device("meta"):
            model = recipe.build_model(data, n_rows=rows, init_rows=None, heads=heads)
    except Exception:  # a model that needs real data to be built: the trial itself will tell
        return None
    return sum(p.numel() for p in model.parameters())


def estimate_trial(
    spec: Mapping[str, Any], *, rows: int | None, in_shape: tuple[int, ...] | None, num_classes: int | None
) -> MemoryEstimate:
    """The memory one trial of `spec` needs, for data of `rows` x `in_shape` (None: not known before loading).

    Unknown data counts as 1000 rows of 64 features and 10 classes: what the model and batch then
    need is a lower bound, still enough to catch widths and head counts no machine holds.
    """
    from icon_bench.hooks.registry import get_registry

    estimate = MemoryEstimate()
    # YAML reads 5e8 as a float; the load-time checks accept a whole float where an int is declared.
    model = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in (spec.get("model") or {}).items()}
    spec = {**spec, "model": model}
    try:
        recipe = get_registry().get("method", spec["method"]).create().with_overrides(spec)
    except Exception:  # an unknown or broken method: reported by the load-time checks or the trial
        return estimate
    known_rows = rows if rows is not None else 1000
    shape = in_shape if in_shape is not None else (64,)
    features = math.prod(shape)
    subset = (spec.get("dataset") or {}).get("subset") if isinstance(spec.get("dataset"), Mapping) else None
    if isinstance(subset, int) and rows is not None:
        known_rows = min(rows, 2 * subset)  # subset caps train and test each
    if rows is not None:
        estimate.parts["data"] = known_rows * features * 4 * _DATA_COPIES
        # A method that knows what its fit holds says so (the scikit-learn baselines do).
        own = getattr(recipe, "memory_parts", None)
        if callable(own):
            estimate.parts.update(own(known_rows, features, num_classes or 10))
    options = getattr(recipe, "options", {}) or {}
    heads = int(options.get("heads", 1) or 1)
    params = _model_params(recipe, known_rows, shape, num_classes or 10, heads)
    if params is not None:
        estimate.params = params
        estimate.parts["model"] = params * 4 * _PARAM_COPIES
    batch = _setting(recipe, "batch_size")
    if params is not None and isinstance(batch, int):
        n = min(batch, known_rows) if rows is not None else batch
        estimate.parts["batch"] = n * n * 4 * _KERNEL_MATRICES * heads
    elif params is not None and rows is not None:
        # Full batch: the structured losses walk it in row blocks (loss/objective.py), never N x N at once.
        estimate.parts["batch"] = known_rows * min(known_rows, _ROW_BLOCK) * 4 * _KERNEL_MATRICES * heads
    return estimate


def _setting(recipe: Any, key: str) -> Any:
    """A learned method's trainer setting: the spec's, else the recipe's, else the trainer's default."""
    from icon_bench.train.trainer import TrainSettings

    settings = getattr(recipe, "settings", None)
    if not isinstance(settings, Mapping):
        return None
    return settings.get(key, getattr(TrainSettings(), key, None))


def row_passes(spec: Mapping[str, Any], rows: int | None) -> int | None:
    """Epochs x training rows of a learned method's trial (None when either is unknown)."""
    from icon_bench.hooks.registry import get_registry

    if rows is None:
        return None
    try:
        recipe = get_registry().get("method", spec["method"]).create().with_overrides(spec)
    except Exception:
        return None
    epochs = _setting(recipe, "epochs")
    return int(epochs) * rows if isinstance(epochs, int) else None
