"""The `imagefolder` dataset: an ImageNet-style tree root/<split>/<class>/<image>, decoded once into the cache."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.data.decoded import DecodedCache, channel_stats
from icon_bench.data.download import data_root
from icon_bench.data.splits import Dataset, DataSplits, _make_splits
from icon_bench.errors import DataError, did_you_mean
from icon_bench.extras import require

__all__ = ["ImageFolderDataset", "imagefolder"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def _pil() -> Any:
    # matplotlib installs Pillow, so this error is rare: "imagefolder needs Pillow: pip install 'icon-bench[vision]'"
    return require("PIL.Image", "imagefolder")


def _class_names(root: Path, split: str, class_file: Path | None) -> list[str]:
    folder = root / split
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
    if class_file is None:
        return found
    if not class_file.is_file():
        raise DataError(f"{class_file}: class-list file not found")
    wanted = [w.split()[0] for w in class_file.read_text(encoding="utf-8").splitlines() if w.strip()]
    for i, name in enumerate(wanted, 1):
        if name not in found:
            hint = did_you_mean(name, found)
            raise DataError(
                f"{class_file}:{i}: class {name!r} has no folder in {folder}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
    return sorted(set(wanted))


def _files(root: Path, split: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: class {name!r} (found in the train split) is missing from split {split!r}")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        paths += found
        labels += [index] * len(found)
    if not paths:
        raise DataError(f"{root / split}: no images ({', '.join(EXTENSIONS)}) under its class folders")
    return paths, np.asarray(labels, dtype=np.int64)


def _decode(paths: list[Path], size: int | None, grey: bool, desc: str) -> np.ndarray:
    """(n, c, h, w) uint8 images; all must share one size unless `size` resizes them (size x size)."""
    from tqdm import tqdm

    from icon_bench.terminal import bar_size

    image_mod = _pil()
    out: np.ndarray | None = None
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", file=sys.stderr, leave=False, **bar_size())):
        try:
            with image_mod.open(path) as im:
                im = im.convert("L" if grey else "RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), image_mod.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"{path}: cannot read as an image ({exc})") from None
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        if out is None:
            out = np.empty((len(paths), *pixels.shape), dtype=np.uint8)
        elif pixels.shape != out.shape[1:]:
            raise DataError(
                f"{path}: image is {pixels.shape[2]}x{pixels.shape[1]}, but {paths[0].name} is "
                f"{out.shape[3]}x{out.shape[2]}; give the dataset `size: N` to resize all to N x N"
            )
        out[i] = pixels
    assert out is not None  # _files found at least one image
    return out


class ImageFolderDataset(Dataset):
    """Images in root/<split>/<class>/<image>; class index from the sorted class folder names."""

    name = "imagefolder"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def _splits(self, root: Path) -> tuple[str, str]:
        train, test = self.params["train_split"], self.params["test_split"]
        if test is None:
            test = "test" if (root / "test").is_dir() else "val"
        for split in (train, test):
            if not (root / split).is_dir():
                raise DataError(f"{root}: no folder {split!r} (expected {root}/<split>/<class>/<image>)")
        return train, test

    def load(self) -> DataSplits:
        p = self.params
        root = Path(p["path"]).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"dataset 'imagefolder': path {root} is not a folder")
        train, test = self._splits(root)
        class_file = Path(p["class_file"]).expanduser() if p["class_file"] else None
        classes = _class_names(root, train, class_file)
        listing = {split: _files(root, split, classes) for split in (train, test)}
        # The cache key covers every file's name, size and modification time and the options: an
        # added, removed or edited image decodes the tree again.
        h = hashlib.sha256(json.dumps([str(root), p["size"], p["grey"], classes]).encode())
        for split, (paths, _) in listing.items():
            for path in paths:
                st = path.stat()
                h.update(f"{split}/{path.relative_to(root / split)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        cache = DecodedCache(data_root() / "imagefolder" / h.hexdigest()[:16])

        def make() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            arrays = {}
            for key, split in (("train", train), ("test", test)):
                paths, labels = listing[split]
                arrays[f"x_{key}"] = _decode(paths, p["size"], p["grey"], f"{root.name}/{split}")
                arrays[f"y_{key}"] = labels
            mean, std = channel_stats(arrays["x_train"])
            return arrays, {"source": str(root), "classes": classes, "channel_mean": mean, "channel_std": std}

        arrays, info = cache.get_or_make("labelled", make)
        meta = {
            "source": str(root),
            "splits": {"train": train, "test": test},
            "classes": classes,
            "cache": str(cache.decoded),
            "channel_mean": info["channel_mean"],
            "channel_std": info["channel_std"],
        }
        data = _make_splits(
            "imagefolder",
            arrays["x_train"],
            np.asarray(arrays["y_train"]),
            arrays["x_test"],
            np.asarray(arrays["y_test"]),
            where=str(root),
            meta=meta,
            test_size=0.2,
            split_seed=0,
            flatten=not p["images"],
            pixels=True,
        )
        data.images = {"train": np.asarray(arrays["x_train"]), "test": np.asarray(arrays["x_test"])}
        return data


def imagefolder(
    path: str,
    class_file: str | None = None,
    size: int | None = None,
    grey: bool = False,
    train_split: str = "train",
    test_split: str | None = None,
    images: bool = False,
) -> Dataset:
    """Your images in an ImageNet-style tree `path`/<split>/<class>/<image> (PNG, JPEG, ...), read with Pillow.

    Class indices follow the sorted class folder names of the train split; `class_file` names a text
    file with one class folder per line to keep only those (ImageNet-100 style). The test split is
    `test_split`, else the folder `test`, else `val`. Images are converted to RGB (grey=True: one
    channel) and must share one size unless `size` resizes each to size x size. Decoded once into
    $ICON_BENCH_DATA/imagefolder/ (redone when a file changes); rows flat unless images=True.
    """
    return ImageFolderDataset(
        path=path, class_file=class_file, size=size, grey=grey, train_split=train_split, test_split=test_split,
        images=images,
    )
