"""Datasets: the `DataSplits` contract, the built-in and file datasets, `load_dataset`, the kNN graph, augmentations."""

from __future__ import annotations

from icon_bench.data.augment import Augmenter, augmenter_for
from icon_bench.data.builtin import BlobsDataset, SklearnDataset
from icon_bench.data.files import ArraysDataset
from icon_bench.data.graph import cache_root, content_hash, knn_graph
from icon_bench.data.load import load_dataset
from icon_bench.data.options import COMMON_OPTIONS, DEFAULT_SPLITS, dataset_label
from icon_bench.data.splits import Dataset, DataSplits, stratified_subset, val_indices

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
