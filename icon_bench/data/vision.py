"""The image datasets `mnist`, `fashion_mnist`, `cifar10`, `cifar100`, `stl10`: downloaded once, verified, decoded once."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.data.catalog import CATALOG, DatasetInfo
from icon_bench.data.decoded import DecodedCache, channel_stats
from icon_bench.data.download import data_root, ensure_files, file_md5
from icon_bench.data.formats import read_cifar, read_idx, read_stl10
from icon_bench.data.splits import Dataset, DataSplits, _make_splits
from icon_bench.errors import DataError

__all__ = [
    "ImageDataset",
    "cached",
    "cifar10",
    "cifar100",
    "fashion_mnist",
    "import_source",
    "load_images",
    "mnist",
    "stl10",
]

Arrays = dict[str, np.ndarray]


def _cache(name: str) -> DecodedCache:
    return DecodedCache(data_root() / name)


def _part(unlabeled: bool) -> str:
    return "unlabeled" if unlabeled else "labelled"


def cached(name: str) -> bool:
    """True when the dataset's decoded arrays (the labelled splits) are in the cache."""
    return _cache(name).info("labelled") is not None


# -- finding a copy: the cache's archives, a `path:` folder, an archive, or torchvision's layout ---------


def _verify(path: Path, md5: str) -> None:
    if md5 and file_md5(path) != md5:
        raise DataError(f"{path}: checksum mismatch (md5 {file_md5(path)}, expected {md5}); not the published file")


def locate(info: DatasetInfo, path: Path, unlabeled: bool = False) -> Path:
    """The folder under `path` holding the dataset's archives or its extracted files (verified), else DataError."""
    path = path.expanduser()
    if path.is_file():
        if path.name not in {f.name for f in info.files}:
            raise DataError(f"{path}: not one of {info.name}'s files ({', '.join(f.name for f in info.files)})")
        path = path.parent
    if not path.is_dir():
        raise DataError(f"dataset {info.name!r}: path {path} does not exist")
    extracted = [(n, m) for n, m in info.extracted if unlabeled or "unlabeled" not in n]
    for sub in info.layouts:
        folder = path / sub if sub else path
        if all((folder / f.name).is_file() for f in info.files):
            for f in info.files:
                _verify(folder / f.name, f.md5)
            return folder
        if extracted and all((folder / n).is_file() for n, _ in extracted):
            for n, md5 in extracted:
                _verify(folder / n, md5)
            return folder
    looked = ", ".join(str(path / s) if s else str(path) for s in info.layouts)
    wanted = " + ".join(f.name for f in info.files)
    raise DataError(
        f"dataset {info.name!r}: no copy under {path}: looked in {looked} for {wanted}"
        + (f" or the extracted {', '.join(n for n, _ in extracted)}" if extracted else "")
    )


def _decode(info: DatasetInfo, folder: Path, unlabeled: bool) -> Arrays:
    """The dataset's arrays from `folder` (archives or extracted files): images (n, c, h, w) uint8, labels int64."""
    if info.name in ("mnist", "fashion_mnist"):
        out: Arrays = {}
        for split, stem in (("train", "train"), ("test", "t10k")):
            files = {}
            for kind in ("images-idx3", "labels-idx1"):
                name = f"{stem}-{kind}-ubyte"
                files[kind] = folder / f"{name}.gz" if (folder / f"{name}.gz").is_file() else folder / name
            x, y = read_idx(files["images-idx3"]), read_idx(files["labels-idx1"])
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not pair up")
            out[f"x_{split}"], out[f"y_{split}"] = x[:, None], y.astype(np.int64)
        return out
    archive = folder / info.files[0].name
    source = archive if archive.is_file() else folder
    if info.name in ("cifar10", "cifar100"):
        return read_cifar(source, hundred=info.name == "cifar100")
    arrays = read_stl10(source, unlabeled)
    return {"x_unlabeled": arrays["x_unlabeled"]} if unlabeled else arrays


def _make(info: DatasetInfo, path: str | None, mirror: str | None, unlabeled: bool) -> tuple[Arrays, dict[str, Any]]:
    """Find or download the files, decode them, and describe where they came from."""
    folder = data_root() / info.name
    if path is not None:
        source = locate(info, Path(path), unlabeled)
        origin = str(source)
    else:
        ensure_files(info.name, folder, info.files, mirror=mirror)
        source, origin = folder, " ".join(u for f in info.files for u in f.urls[:1])
    arrays = _decode(info, source, unlabeled)
    record: dict[str, Any] = {"source": origin, "md5": {f.name: f.md5 for f in info.files}}
    if not unlabeled:
        record["channel_mean"], record["channel_std"] = channel_stats(arrays["x_train"])
    return arrays, record


def load_images(
    name: str, *, path: str | None = None, mirror: str | None = None, unlabeled: bool = False
) -> tuple[Arrays, dict[str, Any]]:
    """A catalogued dataset's raw arrays (uint8 images (n, c, h, w), int64 labels), memory-mapped from the cache.

    The first call downloads (or reads `path`), verifies and decodes; later calls, in any process,
    only map the .npy files. `unlabeled` gives STL-10's x_unlabeled alone.
    """
    info = CATALOG[name]
    cache = _cache(name)
    return cache.get_or_make(_part(unlabeled), lambda: _make(info, path, mirror, unlabeled))


class ImageDataset(Dataset):
    """One of the catalogued image datasets, with its official train / test split."""

    def __init__(self, name: str, **params: Any) -> None:
        self.name, self.params = name, params

    def load(self) -> DataSplits:
        p = self.params
        arrays, info = load_images(self.name, path=p.get("path"), mirror=p.get("mirror"))
        y_train, y_test = arrays["y_train"], arrays["y_test"]
        if p.get("coarse"):
            y_train, y_test = arrays["y_train_coarse"], arrays["y_test_coarse"]
        meta: dict[str, Any] = {
            "source": info["source"],
            "cache": str(_cache(self.name).decoded),
            "channel_mean": info["channel_mean"],
            "channel_std": info["channel_std"],
        }
        if p.get("coarse"):
            meta["labels"] = "coarse (20 superclasses)"
        data = _make_splits(
            self.name,
            arrays["x_train"],
            np.asarray(y_train),
            arrays["x_test"],
            np.asarray(y_test),
            where=f"dataset {self.name!r}",
            meta=meta,
            test_size=0.2,
            split_seed=0,
            flatten=not p.get("images", False),
            pixels=True,
        )
        images = {"train": np.asarray(arrays["x_train"]), "test": np.asarray(arrays["x_test"])}
        if p.get("unlabeled"):
            extra, _ = load_images(self.name, path=p.get("path"), mirror=p.get("mirror"), unlabeled=True)
            images["unlabeled"] = np.asarray(extra["x_unlabeled"])
            meta["n_unlabeled"] = len(images["unlabeled"])
            _add_unlabelled(data, images)
        data.images = images
        return data


def _add_unlabelled(data: DataSplits, images: Arrays) -> None:
    """STL-10's unlabelled images appended to the train rows with label -1 (`meta["unlabelled_rows"]`).

    Methods that train without labels (simclr, ...) see them; the val split is drawn from the
    labelled rows only, and evaluation's kNN / probe bank leaves them out (no label to vote with).
    """
    import torch

    extra = images["unlabeled"]
    rows = torch.from_numpy(np.ascontiguousarray(extra)).reshape(len(extra), *data.stored("train").shape[1:])
    data.x_train = torch.cat([data.stored("train"), rows])
    data.y_train = torch.cat([data.y_train, torch.full((len(extra),), -1, dtype=data.y_train.dtype)])
    images["train"] = np.concatenate([images["train"], extra])
    data.meta["unlabelled_rows"] = len(extra)


# -- pre-filling the cache: `icon-bench datasets import` ------------------------------------------------


def _import_npz(info: DatasetInfo, file: Path) -> dict[str, Any]:
    """An .npz holding x_train, y_train, x_test, y_test (MNIST's keys) written as the decoded arrays."""
    if info.name not in ("mnist", "fashion_mnist"):
        raise DataError(f"{file}: an .npz can pre-fill mnist or fashion_mnist, not {info.name} (give its archive)")
    with np.load(file, allow_pickle=False) as z:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
        if missing:
            raise DataError(f"{file}: missing key(s) {', '.join(sorted(missing))} (it has {', '.join(z.files)})")
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for split, rows in (("train", 60000), ("test", 10000)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != (28, 28) or len(x) != rows or y.shape != (rows,):
            raise DataError(
                f"{file}: x_{split} must be ({rows}, 28, 28) uint8 and y_{split} ({rows},), "
                f"got {x.dtype} {x.shape} and {y.shape}"
            )
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{file}: y_{split} must hold labels 0..9")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[:, None], y.astype(np.int64)
    mean, std = channel_stats(arrays["x_train"])
    info_json = {"source": f"imported from {file} (md5 {file_md5(file)})", "channel_mean": mean, "channel_std": std}
    cache = _cache(info.name)
    with cache.lock():
        cache.write("labelled", arrays, info_json)
    return info_json


def _copy_verified(src: Path, dest: Path, md5: str) -> None:
    _verify(src, md5)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def import_source(name: str, source: str | os.PathLike[str]) -> str:
    """Pre-fill the cache of `name` from a local file or folder; returns what was done, in words.

    `source` may be an .npz with x_train/y_train/x_test/y_test (MNIST, Fashion-MNIST), one of the
    published archives, or a folder holding them or their extracted files (torchvision's layout).
    Archives are checked against their published MD5 and copied into the cache; then the arrays are decoded.
    """
    info = CATALOG[name]
    src = Path(source).expanduser()
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if src.is_file() and src.suffix == ".npz":
        done = _import_npz(info, src)
        return f"{name}: decoded arrays written to {_cache(name).decoded} ({done['source']})"
    cache = _cache(name)
    with cache.lock():
        found = locate(info, src)
        copied = []
        for f in info.files:
            if (found / f.name).is_file() and found != cache.folder:
                _copy_verified(found / f.name, cache.folder / f.name, f.md5)
                copied.append(f.name)
        arrays = _decode(info, found, unlabeled=False)
        mean, std = channel_stats(arrays["x_train"])
        cache.write("labelled", arrays, {"source": str(found), "channel_mean": mean, "channel_std": std,
                                         "md5": {f.name: f.md5 for f in info.files}})
    what = f"copied {', '.join(copied)} and " if copied else ""
    return f"{name}: {what}decoded arrays written to {cache.decoded}"


# -- the registered factories --------------------------------------------------------------------------


def mnist(path: str | None = None, mirror: str | None = None, images: bool = False) -> Dataset:
    """MNIST digits (60000 / 10000, 28x28 grey, 10 classes), official split, pixels scaled to [0, 1].

    Downloaded once into $ICON_BENCH_DATA (else ~/.cache/icon-bench) and verified; `path` reads an
    existing copy (the .gz files, or torchvision's MNIST/raw folder); `mirror` a URL prefix serving
    the files. Rows are flat 784-vectors with meta image_shape (1, 28, 28); images=True keeps (n, 1, 28, 28).
    """
    return ImageDataset("mnist", path=path, mirror=mirror, images=images)


def fashion_mnist(path: str | None = None, mirror: str | None = None, images: bool = False) -> Dataset:
    """Fashion-MNIST clothing (60000 / 10000, 28x28 grey, 10 classes), official split; options as for mnist."""
    return ImageDataset("fashion_mnist", path=path, mirror=mirror, images=images)


def cifar10(path: str | None = None, mirror: str | None = None, images: bool = False) -> Dataset:
    """CIFAR-10 (50000 / 10000, 32x32 colour, 10 classes), official split; `path` takes the .tar.gz or its extracted folder."""
    return ImageDataset("cifar10", path=path, mirror=mirror, images=images)


def cifar100(path: str | None = None, mirror: str | None = None, images: bool = False, coarse: bool = False) -> Dataset:
    """CIFAR-100 (50000 / 10000, 32x32 colour), fine labels (100 classes); coarse=True: the 20 superclasses (CIFAR-20)."""
    return ImageDataset("cifar100", path=path, mirror=mirror, images=images, coarse=coarse)


def stl10(path: str | None = None, mirror: str | None = None, images: bool = False, unlabeled: bool = False) -> Dataset:
    """STL-10 labelled train / test (5000 / 8000, 96x96 colour, 10 classes); a 2.6 GB download.

    unlabeled=True also decodes the 100000 unlabelled images and appends them to the train rows with
    label -1, for methods that train without labels (simclr, ...): the val split is drawn from the
    labelled rows, evaluation's kNN / probe bank leaves them out, and a method that trains on labels
    (supcon, cross_entropy) is refused. They are also in `DataSplits.images["unlabeled"]`.
    """
    return ImageDataset("stl10", path=path, mirror=mirror, images=images, unlabeled=unlabeled)
