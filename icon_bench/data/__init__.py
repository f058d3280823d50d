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
    "content_hash",
    "dataset_label",
    "knn_graph",
    "load_dataset",
    "stratified_subset",
    "val_indices",
]

#: Where each public name lives, loaded on first use: `icon_bench.data.options` (split names, labels)
#: is read by trial ids and the CLI, which must not pull in torch through this package.
_HOMES = {
    "Augmenter": "icon_bench.data.augment",
    "augmenter_for": "icon_bench.data.augment",
    "BlobsDataset": "icon_bench.data.builtin",
    "SklearnDataset": "icon_bench.data.builtin",
    "ArraysDataset": "icon_bench.data.files",
    "cache_root": "icon_bench.data.graph",
    "content_hash": "icon_bench.data.graph",
    "knn_graph": "icon_bench.data.graph",
    "load_dataset": "icon_bench.data.load",
    "COMMON_OPTIONS": "icon_bench.data.options",
    "DEFAULT_SPLITS": "icon_bench.data.options",
    "dataset_label": "icon_bench.data.options",
    "Dataset": "icon_bench.data.splits",
    "DataSplits": "icon_bench.data.splits",
    "stratified_subset": "icon_bench.data.splits",
    "val_indices": "icon_bench.data.splits",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'icon_bench.data' has no attribute {name!r}")
