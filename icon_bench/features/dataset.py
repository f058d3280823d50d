"""The `features` dataset: a feature cache folder read memory-mapped, with its kNN graph and stored views."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from icon_bench.data.splits import Dataset, DataSplits, _as_tensor
from icon_bench.errors import DataError
from icon_bench.features.cache import read_cache
from icon_bench.hooks.specs import hookimpl

__all__ = ["FeaturesDataset", "features"]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """float32 arrays stay memory-mapped (no copy); float16 ones are widened (one float32 copy)."""
    if array.dtype == np.float32:
        return _as_tensor(array)
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


class FeaturesDataset(Dataset):
    """A feature cache (`icon-bench embed` or `icon-bench import-features`): features, labels, graph, views."""

    name = "features"

    def __init__(self, path: str, verify: bool, graph: bool, views: bool, embed: str | None = None) -> None:
        self.path, self.verify, self.graph, self.views, self.embed = path, verify, graph, views, embed

    def load(self) -> DataSplits:
        try:
            manifest, arrays = read_cache(self.path, verify=self.verify)
        except DataError as exc:
            if self.embed and not os.path.isdir(os.path.expanduser(self.path)):
                raise DataError(f"{exc}; this suite makes it with: {self.embed}") from None
            raise
        where = f"dataset 'features' ({self.path})"
        test = "test" if "features_test" in arrays else "val"
        for stem in ("features_train", "labels_train", f"features_{test}", f"labels_{test}"):
            if stem not in arrays:
                raise DataError(f"{where}: the cache has no {stem}.npy")
        knn = arrays.get("knn_train") if self.graph else None
        views = arrays.get("views_train") if self.views else None
        identity = manifest["identity"]
        meta: dict[str, Any] = {
            "source": os.path.abspath(os.path.expanduser(self.path)),
            "report_label": manifest.get("label"),
            "features": {
                "key": manifest["key"],
                "backbone": {k: identity.get("backbone", {}).get(k) for k in ("plugin", "repo", "model", "ref", "weights_sha256")},
                "dataset": identity.get("dataset", {}).get("name"),
                "dtype": identity.get("dtype"),
                "views": 0 if views is None else int(views.shape[1]),
            },
        }
        if knn is not None:
            meta["knn_graph"] = {"k": int(knn.shape[1]), "metric": "cosine", "source": "feature cache"}
            if manifest.get("graph"):  # how it was searched: exact, or approximate with its recall
                meta["knn_graph"]["search"] = manifest["graph"]
        return DataSplits(
            x_train=_tensor(arrays["features_train"]),
            y_train=torch.from_numpy(np.array(arrays["labels_train"], dtype=np.int64)),
            x_test=_tensor(arrays[f"features_{test}"]),
            y_test=torch.from_numpy(np.array(arrays[f"labels_{test}"], dtype=np.int64)),
            num_classes=int(manifest.get("num_classes") or int(np.max(arrays["labels_train"])) + 1),
            name="features",
            meta=meta,
            knn_train=None if knn is None else _as_tensor(np.asarray(knn, dtype=np.int64)),
            views_train=None if views is None else _as_tensor(views),
        )


def features(path: str, verify: bool = True, graph: bool = True, views: bool = True, embed: str | None = None) -> Dataset:
    """Frozen features from a cache folder made by `icon-bench embed` (or imported from TEMI / TURTLE).

    Features are memory-mapped (float32 without a copy; float16 widened once); the cached cosine
    kNN graph (graph=True) serves methods that need one and `settings.neighbors`; the stored
    augmented views (views=True) are what `augment: auto` draws views from. The folder is checked
    against its manifest's sha256 on load (verify=False checks sizes only). Reports call it by the
    manifest's label, e.g. imagenet1k-dinov2-vitb14. `embed` is the command that makes the folder:
    `icon-bench run --dry-run` shows it when the folder is missing, and a load of a missing folder says it.
    """
    return FeaturesDataset(path=os.fspath(path), verify=verify, graph=graph, views=views, embed=embed)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("features", features)
