"""Datasets: the `DataSplits` contract, built-in datasets, array files, and `load_dataset` with its common options."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench.errors import DataError, UnknownNameError, did_you_mean
from icon_bench.hooks.specs import hookimpl

__all__ = [
    "COMMON_OPTIONS",
    "ArraysDataset",
    "BlobsDataset",
    "DataSplits",
    "Dataset",
    "SklearnDataset",
    "cache_root",
    "content_hash",
    "knn_graph",
    "load_dataset",
    "stratified_subset",
]

ENV_CACHE = "ICON_BENCH_CACHE"

#: Options every dataset takes; `load_dataset` applies them after `Dataset.load()`, in this order:
#: subset, standardize, pca, knn.
COMMON_OPTIONS: dict[str, Any] = {
    "subset": None,
    "subset_seed": 0,
    "standardize": False,
    "pca": None,
    "knn": None,
    "knn_metric": "cosine",
}


@dataclasses.dataclass
class DataSplits:
    """A train/test split held as tensors: features float32, labels int64 in 0..num_classes-1."""

    x_train: Tensor  # float32, (n, d) vectors or (n, c, h, w) images
    y_train: Tensor  # int64
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    meta: dict  # source, content hash, preprocessing applied
    knn_train: Tensor | None = None  # (n_train, k) int64 global kNN graph, when asked for

    # Pickled with numpy arrays in place of CPU tensors: Ray's object store hands a numpy array to
    # every trial on a node without a copy (a pickled tensor is copied into each trial), so one
    # dataset in memory serves all concurrent trials. Trials must therefore treat the splits as
    # read-only (none of the built-ins writes into them).
    def __getstate__(self) -> dict[str, Any]:
        return {
            k: v.numpy() if isinstance(v, Tensor) and v.device.type == "cpu" and not v.requires_grad else v
            for k, v in self.__dict__.items()
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: _as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """(c, h, w) of one image: the tensor's own shape for images, meta's `image_shape` for flat ones."""
        if self.x_train.dim() == 4:
            return tuple(self.x_train.shape[1:])
        shape = self.meta.get("image_shape")
        return tuple(shape) if shape else None

    def check(self) -> None:
        """Raise DataError when the splits break the contract (shapes, dtypes, label range, finite values)."""
        where = f"dataset {self.name!r}"
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise DataError(f"{where}: x_{split} and y_{split} must be torch tensors")
            if x.dtype != torch.float32:
                raise DataError(f"{where}: x_{split} must be float32, got {x.dtype}")
            if y.dtype != torch.int64 or y.dim() != 1:
                raise DataError(f"{where}: y_{split} must be a 1-D int64 tensor, got {y.dtype} {tuple(y.shape)}")
            if x.dim() not in (2, 4):
                raise DataError(f"{where}: x_{split} must be (n, d) or (n, c, h, w), got {tuple(x.shape)}")
            if len(x) != len(y):
                raise DataError(f"{where}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{where}: y_{split} must lie in 0..{self.num_classes - 1}")
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{where}: x_{split} holds NaN or inf values")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{where}: train and test features differ in shape: "
                f"{tuple(self.x_train.shape[1:])} vs {tuple(self.x_test.shape[1:])}"
            )
        if self.knn_train is not None and (
            self.knn_train.dtype != torch.int64 or self.knn_train.shape[0] != len(self.x_train)
        ):
            raise DataError(f"{where}: knn_train must be (n_train, k) int64")


def _as_tensor(array: np.ndarray) -> Tensor:
    """A tensor sharing `array`'s memory, also when the array is read-only (a Ray object store buffer)."""
    with warnings.catch_warnings():
        # torch warns that writing into a read-only buffer is undefined; trials only read the splits.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class Dataset:
    """Base class of a registered dataset: holds its parameters, `load()` builds the splits."""

    name: str = "dataset"

    def load(self) -> DataSplits:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Helpers shared by the built-in datasets
# --------------------------------------------------------------------------------------------


def _split_indices(y: np.ndarray, test_size: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test indices, each sorted so row order follows the source."""
    if not 0.0 < test_size < 1.0:
        raise DataError(f"{where}: test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    classes, counts = np.unique(y, return_counts=True)
    n_test = _allocate(counts, round(test_size * len(y)))
    for c, k in zip(classes, n_test):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    if mask.sum() == 0 or len(test_idx) == 0:
        raise DataError(f"{where}: test_size={test_size} leaves an empty split of {len(y)} rows")
    return np.flatnonzero(mask), test_idx


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in proportion to `counts` (largest remainder), never above a count."""
    total = min(total, int(counts.sum()))
    exact = counts * total / counts.sum()
    alloc = np.floor(exact).astype(np.int64)
    # Largest remainders first; stable order so ties go to the smaller class label.
    order = np.argsort(-(exact - alloc), kind="stable")
    for i in order[: total - int(alloc.sum())]:
        alloc[i] += 1
    return np.minimum(alloc, counts)


def stratified_subset(y: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices (sorted, int64) of a class-stratified random subset of `n` of the rows labelled `y`."""
    y_np = y.cpu().numpy()
    if n >= len(y_np):
        return torch.arange(len(y_np))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y_np, return_counts=True)
    picks = [
        rng.permutation(np.flatnonzero(y_np == c))[:k] for c, k in zip(classes, _allocate(counts, n))
    ]
    return torch.from_numpy(np.sort(np.concatenate(picks)).astype(np.int64))


def _encode_labels(
    y_train: np.ndarray, y_test: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray, int, list[int] | None]:
    """Integer labels -> 0..C-1 (C counted over both splits); the original values when they were remapped."""
    for name, y in (("labels", y_train), ("test labels", y_test)):
        if y.ndim != 1:
            raise DataError(f"{where}: {name} must be one value per row, got shape {y.shape}")
        if y.dtype.kind in "iub":
            continue
        if y.dtype.kind == "f":
            bad = ~np.isfinite(y) | (y != np.round(y))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{where}: {name} must be integers; row {row} holds {y[row]!r}")
            continue
        raise DataError(f"{where}: {name} must be integers, got dtype {y.dtype} (encode class names as 0..C-1)")
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    values = np.unique(np.concatenate([y_train, y_test]))
    if len(values) == 0:
        raise DataError(f"{where}: no labels")
    if values[0] == 0 and values[-1] == len(values) - 1:
        return y_train, y_test, len(values), None
    return (
        np.searchsorted(values, y_train),
        np.searchsorted(values, y_test),
        len(values),
        [int(v) for v in values],
    )


def _features(x: np.ndarray, where: str, what: str = "features") -> np.ndarray:
    """Numeric features as float32, with uint8 images scaled to [0, 1] and non-finite values rejected."""
    if x.dtype.kind not in "iufb":
        raise DataError(f"{where}: {what} must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{where}: {what} need one row per sample and at least one column, got shape {x.shape}")
    out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(out), -1).any(axis=1))[0])
        raise DataError(f"{where}: {what} hold {int(bad.sum())} NaN/inf values (first in row {row})")
    return out


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """(n, h, w) -> (n, 1, h, w); channels-last (n, h, w, c) -> (n, c, h, w); (n, c, h, w) as is."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise DataError(f"{where}: images must be (n, h, w), (n, c, h, w) or (n, h, w, c), got shape {x.shape}")


def _make_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    *,
    where: str,
    meta: dict,
    test_size: float,
    split_seed: int,
    flatten: bool = True,
    image_shape: Sequence[int] | None = None,
) -> DataSplits:
    """Validate arrays, split when no test set is given, and shape them into DataSplits."""
    x_train = _features(x_train, where)
    if len(x_train) != len(y_train):
        raise DataError(f"{where}: {len(x_train)} feature rows but {len(y_train)} labels")
    if x_test is not None:
        if y_test is None:
            raise DataError(f"{where}: test features given without test labels")
        x_test = _features(x_test, where, "test features")
        if len(x_test) != len(y_test):
            raise DataError(f"{where}: {len(x_test)} test feature rows but {len(y_test)} test labels")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(
                f"{where}: test features have shape {x_test.shape[1:]} per row, train {x_train.shape[1:]}"
            )
        meta["split"] = "given"
    else:
        tr, te = _split_indices(np.asarray(y_train), test_size, split_seed, where)
        x_train, x_test, y_train, y_test = x_train[tr], x_train[te], y_train[tr], y_train[te]
        meta["split"] = {"test_size": test_size, "split_seed": split_seed, "stratified": True}
    y_train, y_test, num_classes, values = _encode_labels(np.asarray(y_train), np.asarray(y_test), where)
    if values is not None:
        meta["label_values"] = values
    if x_train.ndim > 2:
        images = _as_images(x_train, where)
        test_images = _as_images(x_test, where)
        meta["image_shape"] = list(images.shape[1:])
        if flatten:
            x_train, x_test = images.reshape(len(images), -1), test_images.reshape(len(test_images), -1)
        else:
            x_train, x_test = images, test_images
    elif image_shape is not None:
        shape = [int(s) for s in image_shape]
        if int(np.prod(shape)) != x_train.shape[1]:
            raise DataError(f"{where}: image_shape {shape} does not match {x_train.shape[1]} features per row")
        meta["image_shape"] = shape
        if not flatten:
            x_train, x_test = x_train.reshape(-1, *shape), x_test.reshape(-1, *shape)
    return DataSplits(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        num_classes=num_classes,
        name=name,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# Built-in datasets
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Array files
# --------------------------------------------------------------------------------------------

_KEY_FORMATS = (".npz", ".pt", ".pth", ".safetensors")
_TABLE_FORMATS = (".csv", ".parquet")
_FEATURE_KEYS = ("x_train", "x", "X", "features", "data", "inputs")
_LABEL_KEYS = ("y_train", "y", "labels", "targets", "target", "label")
_LABEL_COLUMNS = ("label", "labels", "y", "target", "class")


class ArraysDataset(Dataset):
    """Features and labels read from a user's file (.npy, .npz, .pt, .safetensors, .parquet, .csv)."""

    name = "arrays"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def load(self) -> DataSplits:
        p = self.params
        path = Path(p["path"]).expanduser()
        where = str(path)
        suffix = path.suffix.lower()
        if suffix not in (".npy", *_KEY_FORMATS, *_TABLE_FORMATS):
            raise DataError(
                f"{where}: unsupported file type {suffix or '(none)'!r}; "
                "use .npy, .npz, .pt, .safetensors, .parquet or .csv"
            )
        _require_file(path)
        test_path = Path(p["test_path"]).expanduser() if p["test_path"] else None
        if suffix == ".npy":
            x, y, xt, yt, keys = self._npy(path)
        elif suffix in _TABLE_FORMATS:
            x, y, xt, yt, keys = self._table(path, test_path)
        else:
            x, y, xt, yt, keys = self._keyed(path, test_path)
        meta: dict[str, Any] = {"source": str(path.resolve()), "format": suffix.lstrip("."), "keys": keys}
        return _make_splits(
            "arrays",
            x,
            y,
            xt,
            yt,
            where=where,
            meta=meta,
            test_size=p["test_size"],
            split_seed=p["split_seed"],
            flatten=p["flatten"],
            image_shape=p["image_shape"],
        )

    # .npy: features in `path`; labels, test features and test labels are further .npy paths.
    def _npy(self, path: Path) -> tuple[Any, ...]:
        p = self.params
        if p["features"] is not None:
            raise DataError(f"{path}: 'features' names a key, but a .npy file holds one array; leave it unset")
        labels_path = self._sibling_labels(path, p["labels"])
        x, y = _load_npy(path), _load_npy(labels_path)
        keys = {"features": str(path), "labels": str(labels_path)}
        test_feat = p["test_path"] or p["test_features"]
        if test_feat is None:
            if p["test_labels"] is not None:
                raise DataError(f"{path}: test_labels given without test_features")
            return x, y, None, None, keys
        tpath = _resolve(path, test_feat)
        _require_file(tpath)
        tlabels = self._sibling_labels(tpath, p["test_labels"])
        keys.update(test_features=str(tpath), test_labels=str(tlabels))
        return x, y, _load_npy(tpath), _load_npy(tlabels), keys

    @staticmethod
    def _sibling_labels(path: Path, labels: str | None) -> Path:
        if labels is not None:
            lp = _resolve(path, labels)
            _require_file(lp)
            return lp
        stem = path.stem
        candidates = [f"{stem}_labels.npy", f"{stem}.labels.npy"]
        if stem[:1] in "xX":
            candidates.append(f"y{stem[1:]}.npy")
        candidates.append("labels.npy")
        for name in candidates:
            if (path.parent / name).is_file():
                return path.parent / name
        raise DataError(
            f"{path}: no labels file found beside it (looked for {', '.join(candidates)}); pass labels=<path>"
        )

    def _keyed(self, path: Path, test_path: Path | None) -> tuple[Any, ...]:
        p = self.params
        arrays = _load_keyed(path)
        fkey = _pick_key(arrays, p["features"], _FEATURE_KEYS, path, "features")
        lkey = _pick_key(arrays, p["labels"], _LABEL_KEYS, path, "labels")
        keys = {"features": fkey, "labels": lkey}
        x, y = arrays[fkey], arrays[lkey]
        if test_path is not None:
            _require_file(test_path)
            if test_path.suffix.lower() not in _KEY_FORMATS:
                raise DataError(f"{test_path}: test_path must be one of {', '.join(_KEY_FORMATS)}")
            tarrays = _load_keyed(test_path)
            tf = _pick_key(tarrays, p["test_features"] or fkey, (), test_path, "test_features")
            tl = _pick_key(tarrays, p["test_labels"] or lkey, (), test_path, "test_labels")
            keys.update(test_path=str(test_path), test_features=tf, test_labels=tl)
            return x, y, tarrays[tf], tarrays[tl], keys
        if p["test_features"] is None:
            if p["test_labels"] is not None:
                raise DataError(f"{path}: test_labels given without test_features")
            # A file that ships its own split (x_train/y_train beside x_test/y_test, as MNIST
            # does) is read with it: a benchmark should score on the official test images.
            if (fkey, lkey) == ("x_train", "y_train") and {"x_test", "y_test"} <= set(arrays):
                keys.update(test_features="x_test", test_labels="y_test")
                return x, y, arrays["x_test"], arrays["y_test"], keys
            return x, y, None, None, keys
        tf = _pick_key(arrays, p["test_features"], (), path, "test_features")
        if p["test_labels"] is None:
            raise DataError(f"{path}: test_features={tf!r} given without test_labels")
        tl = _pick_key(arrays, p["test_labels"], (), path, "test_labels")
        keys.update(test_features=tf, test_labels=tl)
        return x, y, arrays[tf], arrays[tl], keys

    def _table(self, path: Path, test_path: Path | None) -> tuple[Any, ...]:
        p = self.params
        if p["test_features"] is not None or p["test_labels"] is not None:
            raise DataError(f"{path}: a table has no test keys; pass test_path=<second table> instead")
        frame = _read_table(path)
        label = _pick_key(frame, p["labels"], _LABEL_COLUMNS, path, "labels", what="column")
        columns = self._feature_columns(frame, label, path)
        x, y = _table_arrays(frame, columns, label, path)
        keys: dict[str, Any] = {"labels": label, "features": columns}
        if test_path is None:
            return x, y, None, None, keys
        _require_file(test_path)
        tframe = _read_table(test_path)
        missing = [c for c in [*columns, label] if c not in tframe.columns]
        if missing:
            raise DataError(f"{test_path}: missing column(s) {', '.join(map(repr, missing))} found in {path.name}")
        xt, yt = _table_arrays(tframe, columns, label, test_path)
        keys["test_path"] = str(test_path)
        return x, y, xt, yt, keys

    def _feature_columns(self, frame: Any, label: str, path: Path) -> list[str]:
        features = self.params["features"]
        if features is None:
            return [str(c) for c in frame.columns if c != label]
        cols = [c.strip() for c in features.split(",")] if isinstance(features, str) else list(features)
        for c in cols:
            _pick_key(frame, c, (), path, "features", what="column")
        return cols


def arrays(
    path: str,
    features: str | None = None,
    labels: str | None = None,
    test_features: str | None = None,
    test_labels: str | None = None,
    test_path: str | None = None,
    flatten: bool = True,
    image_shape: tuple[int, ...] | None = None,
    test_size: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Features and labels from a file: .npy, .npz, .pt, .safetensors, .parquet or .csv.

    - .npz / .pt (a dict of tensors) / .safetensors: `features`, `labels`, `test_features`,
      `test_labels` are key names (defaults: x_train or x, y_train or y). `test_path` reads the
      test split from a second such file (same key names unless the test_* ones are given). A file
      holding x_train/y_train and x_test/y_test (MNIST's layout) uses that split by default.
    - .npy: `path` holds the features; `labels` is the labels .npy (default: a sibling such as
      <stem>_labels.npy, y<rest>.npy for x<rest>.npy, or labels.npy); `test_features` / `test_labels`
      are .npy paths. Relative paths resolve beside `path`.
    - .csv / .parquet: `labels` is the label column (default label, y, target or class),
      `features` an optional comma-separated column list (default: all others); `test_path` a second table.
    Without a test split, a stratified one is drawn (`test_size`, `split_seed`). uint8 arrays are
    scaled to [0, 1]. Image arrays (n, h, w), (n, c, h, w) or (n, h, w, c) are flattened unless
    flatten=False, and meta records image_shape; `image_shape` declares it for flat rows.
    """
    return ArraysDataset(
        path=os.fspath(path),
        features=features,
        labels=labels,
        test_features=test_features,
        test_labels=test_labels,
        test_path=test_path,
        flatten=flatten,
        image_shape=list(image_shape) if image_shape is not None else None,
        test_size=test_size,
        split_seed=split_seed,
    )


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base.parent / p


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise DataError(f"{path}: cannot read as .npy ({exc})") from None


def _load_keyed(path: Path) -> dict[str, np.ndarray]:
    """A name -> array mapping from .npz, .pt or .safetensors, without running pickled code."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as {suffix} ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"{path}: a .pt file must hold a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, Tensor):
            out[str(k)] = v.detach().cpu().numpy()
        elif isinstance(v, np.ndarray):
            out[str(k)] = v
    return out


def _pick_key(
    container: Any,
    given: str | None,
    defaults: Sequence[str],
    path: Path,
    param: str,
    what: str = "key",
) -> str:
    keys = [str(k) for k in (container.columns if hasattr(container, "columns") else container.keys())]
    if given is not None:
        if given in keys:
            return given
        hint = did_you_mean(given, keys)
        msg = f"{path}: no {what} {given!r} (parameter {param})"
        msg += f"; did you mean {' or '.join(map(repr, hint))}?" if hint else f"; it has: {', '.join(keys)}"
        raise DataError(msg)
    for k in defaults:
        if k in keys:
            return k
    raise DataError(f"{path}: pass {param}=<{what}>; none of the default names {list(defaults)} is among {keys}")


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as {path.suffix} ({type(exc).__name__}: {exc})") from None


def _table_arrays(frame: Any, columns: list[str], label: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not columns:
        raise DataError(f"{path}: no feature columns besides the label column {label!r}")
    non_numeric = [c for c in columns if frame[c].dtype.kind not in "iufb"]
    if non_numeric:
        raise DataError(f"{path}: non-numeric feature column(s) {', '.join(map(repr, non_numeric[:5]))}")
    return frame[columns].to_numpy(), frame[label].to_numpy()


# --------------------------------------------------------------------------------------------
# Common options: subset, standardize, pca, knn graph (with its on-disk cache)
# --------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where derived data (kNN graphs) is cached: cache_dir, else $ICON_BENCH_CACHE, else ~/.cache/icon-bench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icon-bench"


def _tensor_digest(t: Tensor) -> str:
    h = hashlib.sha256()
    arr = t.detach().cpu().contiguous().numpy()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr.reshape(-1)).cast("B"))
    return h.hexdigest()


def content_hash(data: DataSplits) -> str:
    """sha256 (hex, 16 chars) over the four tensors' dtypes, shapes and bytes."""
    parts = [_tensor_digest(t) for t in (data.x_train, data.y_train, data.x_test, data.y_test)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


@torch.no_grad()
def knn_graph(x: Tensor, k: int, metric: str = "cosine", chunk_size: int | None = None) -> Tensor:
    """(n, k) int64 indices of each row's k nearest other rows (self excluded), nearest first.

    Computed in row chunks so memory stays O(chunk * n), never n x n at once.
    """
    if metric not in ("cosine", "euclidean"):
        raise DataError(f"knn_metric must be 'cosine' or 'euclidean', got {metric!r}")
    n = len(x)
    if not 1 <= k < n:
        raise DataError(f"knn={k} needs 1 <= k < n_train = {n}")
    x = x.reshape(n, -1).float()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    else:
        sq = (x * x).sum(1)
    chunk = chunk_size or max(1, min(n, (1 << 24) // n))  # about 64 MiB of float32 scores per chunk
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for start in range(0, n, chunk):
        rows = x[start : start + chunk]
        # Larger score = nearer: similarity for cosine, negative squared distance for euclidean.
        score = rows @ x.T
        if metric == "euclidean":
            score = 2 * score - sq[start : start + chunk, None] - sq[None, :]
        idx = torch.arange(start, start + len(rows), device=x.device)
        score[torch.arange(len(rows), device=x.device), idx] = -float("inf")
        out[start : start + len(rows)] = score.topk(k, dim=1).indices
    return out


def _cached_knn(x: Tensor, k: int, metric: str, cache_dir: Path, meta: dict) -> Tensor:
    key = f"{_tensor_digest(x)[:24]}-{metric}-k{k}"
    meta["knn_key"] = key
    path = cache_dir / "knn" / f"{key}.npy"
    if path.is_file():
        try:
            graph = np.load(path, allow_pickle=False)
            if graph.shape == (len(x), k) and graph.dtype == np.int64:
                meta["knn_cache"] = "hit"
                return torch.from_numpy(graph)
        except Exception:  # a truncated or foreign file: recompute and overwrite
            pass
    graph_t = knn_graph(x, k, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so concurrent trials never read a half-written file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, graph_t.cpu().numpy())
    os.replace(tmp, path)
    meta["knn_cache"] = "miss"
    return graph_t


def _standardize(data: DataSplits) -> dict[str, Any]:
    # Per feature (per pixel for images), fitted on train; constant features keep scale 1.
    n = len(data.x_train)
    flat = data.x_train.reshape(n, -1).double()
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    shape = data.x_train.shape[1:]
    mean_f, std_f = mean.float().reshape(shape), std.float().reshape(shape)
    data.x_train = (data.x_train - mean_f) / std_f
    data.x_test = (data.x_test - mean_f) / std_f
    return {"step": "standardize", "fit_on": "train"}


def _pca(data: DataSplits, n_components: int) -> dict[str, Any]:
    if data.x_train.dim() != 2:
        raise DataError(
            f"dataset {data.name!r}: pca needs vector features, got images {tuple(data.x_train.shape[1:])}; "
            "load them flattened"
        )
    n, d = data.x_train.shape
    if not 1 <= n_components <= min(n, d):
        raise DataError(f"dataset {data.name!r}: pca={n_components} must be in 1..{min(n, d)}")
    x = data.x_train.double()
    mean = x.mean(0)
    xc = x - mean
    # Eigenvectors of the d x d covariance: cheap for tall data, exact like a full SVD.
    evals, evecs = torch.linalg.eigh(xc.T @ xc / max(n - 1, 1))
    order = torch.argsort(evals, descending=True)[:n_components]
    comps = evecs[:, order]
    # Fix each component's sign (largest loading positive) so results do not depend on the LAPACK build.
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * signs
    explained = float(evals[order].sum() / evals.clamp_min(0).sum())
    data.x_train = (xc @ comps).float()
    data.x_test = ((data.x_test.double() - mean) @ comps).float()
    data.meta.pop("image_shape", None)
    return {"step": "pca", "n_components": n_components, "fit_on": "train", "explained_variance": explained}


def load_dataset(spec: Any, cache_dir: str | os.PathLike[str] | None = None) -> DataSplits:
    """Build a dataset from a name or {"name": ..., **params}, load it, and apply the common options.

    Options every dataset takes: subset (cap each split at that many rows, stratified, seeded by
    subset_seed), standardize (per feature, fitted on train), pca (components fitted on train;
    vectors only), knn with knn_metric ("cosine" or "euclidean") for the global kNN graph over the
    train split, cached under `cache_dir` (default $ICON_BENCH_CACHE or ~/.cache/icon-bench).
    """
    from icon_bench.hooks.registry import get_registry, split_spec

    name, params = split_spec(spec)
    component = get_registry().get("dataset", name)
    options = dict(COMMON_OPTIONS)
    for key in list(params):
        if key in COMMON_OPTIONS:
            options[key] = params.pop(key)
    if not component.accepts_any:
        known = [p.name for p in component.params]
        for key in params:
            if key not in known:
                raise UnknownNameError("parameter", key, known + list(COMMON_OPTIONS), where=f"dataset {name!r}")
    dataset = component.create(**params)
    data = dataset.load()
    if not isinstance(data, DataSplits):
        raise DataError(f"dataset {name!r}: load() returned {type(data).__name__}, not DataSplits")
    data.meta = dict(data.meta)
    data.check()
    data.meta["dataset"] = {"name": name, "params": _jsonable(params)}
    data.meta["raw_content_hash"] = content_hash(data)
    applied: list[dict[str, Any]] = []

    subset = options["subset"]
    if subset is not None:
        if int(subset) < 1:
            raise DataError(f"dataset {name!r}: subset must be a positive row count, got {subset}")
        seed = int(options["subset_seed"])
        for split in ("train", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            idx = stratified_subset(y, int(subset), seed)
            setattr(data, f"x_{split}", x[idx].contiguous())
            setattr(data, f"y_{split}", y[idx].contiguous())
        applied.append({"step": "subset", "max_rows": int(subset), "seed": seed, "stratified": True})
    if options["standardize"]:
        applied.append(_standardize(data))
    if options["pca"] is not None:
        applied.append(_pca(data, int(options["pca"])))
    data.meta["content_hash"] = content_hash(data)
    if options["knn"] is not None:
        k, metric = int(options["knn"]), str(options["knn_metric"])
        if metric not in ("cosine", "euclidean"):
            hint = did_you_mean(metric, ["cosine", "euclidean"])
            raise DataError(
                f"dataset {name!r}: knn_metric must be 'cosine' or 'euclidean', got {metric!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        data.knn_train = _cached_knn(data.x_train, k, metric, cache_root(cache_dir), data.meta)
        applied.append({"step": "knn", "k": k, "metric": metric, "cache": data.meta["knn_cache"]})
    data.meta["preprocessing"] = applied
    data.meta["options"] = _jsonable({k: v for k, v in options.items() if v != COMMON_OPTIONS[k]})
    data.meta.update(n_train=len(data.x_train), n_test=len(data.x_test))
    return data


def _jsonable(value: Any) -> Any:
    """A copy that survives json.dumps (tuples to lists, unknown objects to repr)."""
    try:
        return json.loads(json.dumps(value, default=repr))
    except (TypeError, ValueError):
        return repr(value)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("digits", digits)
    register("iris", iris)
    register("wine", wine)
    register("breast_cancer", breast_cancer)
    register("blobs", blobs)
    register("arrays", arrays)
