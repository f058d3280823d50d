"""The built-in datasets: scikit-learn's digits, iris, wine and breast cancer, and Gaussian blobs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from icon_bench.data.splits import Dataset, DataSplits, _make_splits
from icon_bench.errors import DataError

__all__ = ["BlobsDataset", "SklearnDataset"]


class SklearnDataset(Dataset):
    """A table bundled with scikit-learn (no download), split train/test by stratified sampling."""

    def __init__(
        self,
        name: str,
        loader: Callable[[], Any],
        *,
        test_size: float,
        split_seed: int,
        scale: float = 1.0,
        image_shape: Sequence[int] | None = None,
        flatten: bool = True,
    ) -> None:
        self.name, self.loader = name, loader
        self.test_size, self.split_seed = test_size, split_seed
        self.scale, self.image_shape, self.flatten = scale, image_shape, flatten

    def load(self) -> DataSplits:
        bunch = self.loader()
        x = np.asarray(bunch.data, dtype=np.float64) / self.scale
        meta: dict[str, Any] = {"source": f"sklearn.datasets.load_{self.name}"}
        if self.scale != 1.0:
            meta["scaled_by"] = 1.0 / self.scale
        return _make_splits(
            self.name,
            x,
            np.asarray(bunch.target),
            None,
            None,
            where=f"dataset {self.name!r}",
            meta=meta,
            test_size=self.test_size,
            split_seed=self.split_seed,
            flatten=self.flatten,
            image_shape=self.image_shape,
        )


def digits(test_size: float = 0.2, split_seed: int = 0, images: bool = False) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 x 64, 10 classes), pixels scaled to [0, 1].

    Rows are flat 64-vectors with meta image_shape (1, 8, 8); images=True keeps (n, 1, 8, 8).
    """
    from sklearn.datasets import load_digits

    return SklearnDataset(
        "digits",
        load_digits,
        test_size=test_size,
        split_seed=split_seed,
        scale=16.0,
        image_shape=(1, 8, 8),
        flatten=not images,
    )


def iris(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's iris flowers (150 x 4, 3 classes)."""
    from sklearn.datasets import load_iris

    return SklearnDataset("iris", load_iris, test_size=test_size, split_seed=split_seed)


def wine(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's wine recognition table (178 x 13, 3 classes)."""
    from sklearn.datasets import load_wine

    return SklearnDataset("wine", load_wine, test_size=test_size, split_seed=split_seed)


def breast_cancer(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast cancer table (569 x 30, 2 classes)."""
    from sklearn.datasets import load_breast_cancer

    return SklearnDataset("breast_cancer", load_breast_cancer, test_size=test_size, split_seed=split_seed)


class BlobsDataset(Dataset):
    """Isotropic Gaussian blobs from sklearn.datasets.make_blobs."""

    name = "blobs"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def load(self) -> DataSplits:
        from sklearn.datasets import make_blobs

        p = self.params
        if p["n_samples"] < 2 * p["centers"]:
            raise DataError(f"dataset 'blobs': n_samples={p['n_samples']} is too few for {p['centers']} centers")
        x, y = make_blobs(
            n_samples=p["n_samples"],
            n_features=p["n_features"],
            centers=p["centers"],
            cluster_std=p["cluster_std"],
            center_box=tuple(p["center_box"]),
            random_state=p["seed"],
        )
        return _make_splits(
            "blobs",
            x,
            y,
            None,
            None,
            where="dataset 'blobs'",
            meta={"source": "sklearn.datasets.make_blobs", "params": dict(p)},
            test_size=p["test_size"],
            split_seed=p["split_seed"],
        )


def blobs(
    n_samples: int = 1000,
    n_features: int = 10,
    centers: int = 5,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    seed: int = 0,
    test_size: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Synthetic Gaussian blobs (make_blobs); a smaller center_box or larger cluster_std makes them overlap."""
    return BlobsDataset(
        n_samples=n_samples,
        n_features=n_features,
        centers=centers,
        cluster_std=cluster_std,
        center_box=list(center_box),
        seed=seed,
        test_size=test_size,
        split_seed=split_seed,
    )
