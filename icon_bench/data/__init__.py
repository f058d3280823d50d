"""Datasets: the `DataSplits` contract, the built-in and file datasets, `load_dataset`, the kNN graph, augmentations."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_SPLITS",
    "ArraysDataset",
    "Augmenter",
    "BlobsDataset",
    "DataSplits",
    "Dataset",
    "SklearnDataset",
    "augmenter_for",
    "cache_root",
    "clear_graph_cache",
    "content_hash",
    "dataset_label",
    "global_knn",
    "knn_graph",
    "load_dataset",
    "stratified_subset",
    "val_indices",
]

#: Where each public name lives, loaded on first use: `icon_bench.data.options` (split names, labels)
#: is read by trial ids and the CLI, which must not pull in torch through this package.
_HOMES: dict[str, tuple[str, ...]] = {
    "icon_bench.data.augment": ("Augmenter", "augmenter_for"),
    "icon_bench.data.builtin": ("BlobsDataset", "SklearnDataset"),
    "icon_bench.data.files": ("ArraysDataset",),
    "icon_bench.data.graph": ("cache_root", "clear_graph_cache", "content_hash", "global_knn", "knn_graph"),
    "icon_bench.data.load": ("load_dataset",),
    "icon_bench.data.options": ("COMMON_OPTIONS", "DEFAULT_SPLITS", "dataset_label"),
    "icon_bench.data.splits": ("Dataset", "DataSplits", "stratified_subset", "val_indices"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'icon_bench.data' has no attribute {name!r}")
