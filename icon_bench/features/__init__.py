"""Frozen features: backbone plugins, `icon-bench embed`, feature caches with manifests, the `features` dataset."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Backbone", "ImagePreprocess", "embed_dataset", "read_cache", "verify_cache"]

#: Loaded on first use, so importing the package pulls in no torch.
_HOMES: dict[str, tuple[str, ...]] = {
    "icon_bench.features.backbones": ("Backbone",),
    "icon_bench.features.preprocess": ("ImagePreprocess",),
    "icon_bench.features.embed": ("embed_dataset",),
    "icon_bench.features.cache": ("read_cache", "verify_cache"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'icon_bench.features' has no attribute {name!r}")
