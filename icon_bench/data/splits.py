"""The `DataSplits` contract, the `Dataset` base, and the split, stratify and label-encoding helpers."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench.data.pixels import Pixels, StoredRows, pack_images, rows_per_chunk, unpack_images
from icon_bench.errors import DataError

__all__ = ["DataSplits", "Dataset", "Pixels", "rows_per_chunk", "stratified_subset", "val_indices"]

_SAME_AS_TRAIN = "<the train tensor>"  # pickled in place of a test split that is the train split


@dataclasses.dataclass
class DataSplits:
    """Train / val / test splits held as tensors: features float32, labels int64 in 0..num_classes-1.

    A dataset's `load()` gives train and test; `load_dataset` carves val from train (protocol 2).
    Without a val split, `x_val` / `y_val` are empty: (0, *feature shape) and (0,).
    Image rows are stored uint8 with `pixels` (data/pixels.py): `x_<split>` reads float32 (converted
    once, on first read), `stored(split)` the uint8 rows, which the trainer converts per batch.
    """

    x_train: Tensor  # float32, (n, d) vectors or (n, c, h, w) images
    y_train: Tensor  # int64
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    meta: dict  # source, content hash, preprocessing applied, val_fraction, val_seed, transductive
    knn_train: Tensor | None = None  # (n_train, k) int64 global kNN graph, when asked for
    x_val: Tensor | None = None  # (n_val, ...) rows carved from train; empty when there is none
    y_val: Tensor | None = None
    #: Image datasets (data/vision.py, data/imagefolder.py): the raw uint8 images (n, c, h, w) of each
    #: split, row for row with x_train / x_val / x_test (load_dataset keeps them aligned through
    #: subset and the val split; "unlabeled" where a dataset has such images). None for other data.
    images: dict[str, np.ndarray] | None = None
    views_train: Tensor | None = None  # (n_train, K, d) stored augmented views of the train rows (feature caches)
    pixels: Pixels | None = None  # uint8 rows' conversion to float32; None: the rows are float32

    def __post_init__(self) -> None:
        # Datasets written before protocol 2 (and plugins) build train/test only: val is then empty.
        train = self.stored("train")
        if self.stored("val") is None and isinstance(train, Tensor):
            self.x_val = train.new_empty((0, *train.shape[1:]))
        if self.y_val is None and isinstance(self.y_train, Tensor):
            self.y_val = self.y_train.new_empty((0,))

    def stored(self, split: str) -> Any:
        """The rows of `split` as stored: uint8 when the splits have `pixels` (no conversion), else x_<split>."""
        return self.__dict__.get(f"x_{split}")

    # Pickled with numpy arrays in place of CPU tensors: Ray's object store hands a numpy array to
    # every trial on a node without a copy (a pickled tensor is copied into each trial), so one
    # dataset in memory serves all concurrent trials. Trials must therefore treat the splits as
    # read-only (none of the built-ins writes into them).
    def __getstate__(self) -> dict[str, Any]:
        state = {
            k: v.numpy() if isinstance(v, Tensor) and v.device.type == "cpu" and not v.requires_grad else v
            for k, v in self.__dict__.items()
            if k != "_floats"  # converted rows: the receiver converts again if it reads them
        }
        # Transductive data holds one tensor as both train and test: ship it once.
        for split in ("x", "y"):
            if self.__dict__.get(f"{split}_test") is self.__dict__.get(f"{split}_train"):
                state[f"{split}_test"] = _SAME_AS_TRAIN
        if self.images is not None and self.pixels is not None:  # images that view the rows: shipped once
            state["images"] = pack_images(self.images, {s: self.stored(s) for s in ("train", "val", "test")})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: _as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})
        for split in ("x", "y"):
            if isinstance(state.get(f"{split}_test"), str) and state[f"{split}_test"] == _SAME_AS_TRAIN:
                self.__dict__[f"{split}_test"] = self.__dict__[f"{split}_train"]
        if self.__dict__.get("images") is not None and self.__dict__.get("pixels") is not None:
            self.images = unpack_images(self.images, {s: self.stored(s) for s in ("train", "val", "test")})

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """(c, h, w) of one image: the tensor's own shape for images, meta's `image_shape` for flat ones."""
        train = self.stored("train")
        if train.dim() == 4:
            return tuple(train.shape[1:])
        shape = self.meta.get("image_shape")
        return tuple(shape) if shape else None

    def val_as_test(self) -> DataSplits:
        """The splits a `"split": "val"` trial hands its method: train, the val rows in the test slots, no val.

        The real test split is not part of the result, so a method tuned on val cannot see a test row.
        """
        if len(self.y_val) == 0:
            raise DataError(
                f"dataset {self.name!r} has no val split (val_fraction=0 or transductive); "
                "a val trial needs one: give the dataset val_fraction > 0"
            )
        meta = {**self.meta, "scored_split": "val"}
        images = self.images
        if images is not None:
            images = {k: v for k, v in images.items() if k not in ("test", "val")}
            if "val" in self.images:
                images["test"] = self.images["val"]
        # A copy of the stored fields (dataclasses.replace would read, so convert, every split).
        out = object.__new__(DataSplits)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_floats"})
        out.x_test, out.y_test, out.meta, out.images = self.stored("val"), self.y_val, meta, images
        out.x_val = out.y_val = None  # emptied by __post_init__
        out.__post_init__()
        return out

    def check(self) -> None:
        """Raise DataError when the splits break the contract (shapes, dtypes, label range, finite values)."""
        where = f"dataset {self.name!r}"
        dtype = torch.float32 if self.pixels is None else torch.uint8
        for split in ("train", "val", "test"):
            x, y = self.stored(split), getattr(self, f"y_{split}")
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise DataError(f"{where}: x_{split} and y_{split} must be torch tensors")
            if x.dtype != dtype:
                raise DataError(f"{where}: x_{split} must be {dtype}{' (pixels)' if self.pixels else ''}, got {x.dtype}")
            if y.dtype != torch.int64 or y.dim() != 1:
                raise DataError(f"{where}: y_{split} must be a 1-D int64 tensor, got {y.dtype} {tuple(y.shape)}")
            if x.dim() not in (2, 4):
                raise DataError(f"{where}: x_{split} must be (n, d) or (n, c, h, w), got {tuple(x.shape)}")
            if len(x) != len(y):
                raise DataError(f"{where}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
            # Train rows without a label (STL-10's unlabelled images) carry -1, and meta says how many.
            low = -1 if split == "train" and self.meta.get("unlabelled_rows") else 0
            if len(y) and (int(y.min()) < low or int(y.max()) >= self.num_classes):
                raise DataError(f"{where}: y_{split} must lie in 0..{self.num_classes - 1}")
            if self.pixels is None and not all_finite(x):  # uint8 is always finite
                raise DataError(f"{where}: x_{split} holds NaN or inf values")
        train = self.stored("train")
        for split in ("val", "test"):
            other = self.stored(split)
            if train.shape[1:] != other.shape[1:]:
                raise DataError(
                    f"{where}: train and {split} features differ in shape: "
                    f"{tuple(train.shape[1:])} vs {tuple(other.shape[1:])}"
                )
        if self.knn_train is not None and (
            self.knn_train.dtype != torch.int64 or self.knn_train.shape[0] != len(train)
        ):
            raise DataError(f"{where}: knn_train must be (n_train, k) int64")
        if self.views_train is not None and (
            self.views_train.dim() != 3 or self.views_train.shape[0] != len(self.x_train)
            or self.views_train.shape[2:] != train.shape[1:]
        ):
            raise DataError(f"{where}: views_train must be (n_train, views, d) like x_train's rows")


for _split in ("train", "val", "test"):  # set after @dataclass, which took their defaults and types
    setattr(DataSplits, f"x_{_split}", StoredRows(f"x_{_split}"))


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


def val_indices(y: Tensor, fraction: float, seed: int, where: str) -> tuple[Tensor, Tensor]:
    """(train, val) row indices (sorted, int64) of a stratified val split of `fraction` of the rows labelled `y`.

    Each class gives its share (largest remainder) but keeps at least one train row, so no class
    disappears from training; the same `seed` always gives the same split. Rows labelled -1 (no
    label) stay in train and do not count in `fraction`.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"{where}: val_fraction must be in [0, 1), got {fraction}")
    y_np = y.cpu().numpy()
    if fraction == 0.0:
        return torch.arange(len(y_np)), torch.zeros(0, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    # Rows without a label (-1) always train: val rows are scored, so they must have one.
    labelled = y_np[y_np >= 0]
    classes, counts = np.unique(labelled, return_counts=True)
    take = np.minimum(_allocate(counts, round(fraction * len(labelled))), counts - 1)
    picks = [rng.permutation(np.flatnonzero(y_np == c))[:k] for c, k in zip(classes, take)]
    val = np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)
    if len(val) == 0:
        raise DataError(f"{where}: val_fraction={fraction} of {len(y_np)} train rows leaves an empty val split")
    mask = np.ones(len(y_np), dtype=bool)
    mask[val] = False
    return torch.from_numpy(np.flatnonzero(mask).astype(np.int64)), torch.from_numpy(val.astype(np.int64))


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
    if len(values) == 1:
        # One class makes every clustering "perfect" (hungarian, NMI, ARI all 1.000) and every probe trivial.
        raise DataError(f"{where}: every label is {values[0]}: a single class, which every method scores 1.000 on; "
                        "a benchmark needs at least two classes")
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
    if x.dtype == np.uint8:
        # One float32 pass (the same values as astype then / 255.0); integers are always finite.
        return np.divide(x, np.float32(255.0), dtype=np.float32)
    if x.dtype.kind in "iub":
        return x.astype(np.float32)
    # Float32 input (a memory-mapped .npy included) is used as it is: no second copy of the features.
    out = x.astype(np.float32, copy=False)
    flat = out.reshape(len(out), -1)
    step = rows_per_chunk(flat)
    for start in range(0, len(flat), step):
        bad = ~np.isfinite(flat[start : start + step])
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=1))[0])
            count = int(sum(int((~np.isfinite(flat[a : a + step])).sum()) for a in range(start, len(flat), step)))
            raise DataError(f"{where}: {what} hold {count} NaN/inf values (first in row {row})")
    return out


def all_finite(x: Tensor) -> bool:
    """Whether every value of x is finite, checked in chunks of rows (no full-size bool mask)."""
    flat = x.reshape(len(x), -1) if len(x) else x
    step = rows_per_chunk(flat)
    return all(bool(torch.isfinite(flat[a : a + step]).all()) for a in range(0, len(flat), step))


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
    pixels: bool = False,
) -> DataSplits:
    """Validate arrays, split when no test set is given, and shape them into DataSplits.

    `pixels`: uint8 images stay uint8 (a memory map stays mapped) with a `Pixels` conversion, so
    loading does not convert them (the trainer does, per batch; reading x_<split> does, once).
    """
    convert = (lambda x, *a: x) if pixels else _features  # noqa: E731 - the identity
    x_train = convert(x_train, where)
    if len(x_train) != len(y_train):
        raise DataError(f"{where}: {len(x_train)} feature rows but {len(y_train)} labels")
    if x_test is not None:
        if y_test is None:
            raise DataError(f"{where}: test features given without test labels")
        x_test = convert(x_test, where, "test features")
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
        x_train=_as_tensor(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=_as_tensor(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        num_classes=num_classes,
        name=name,
        meta=meta,
        pixels=Pixels() if pixels else None,
    )
