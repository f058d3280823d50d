"""Decoders of the published formats: gzipped IDX (MNIST), CIFAR's pickled batches, STL-10's binaries."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from icon_bench.errors import DataError

__all__ = ["read_cifar", "read_idx", "read_stl10"]

Arrays = dict[str, np.ndarray]


def _open_maybe_gz(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes: images (n, h, w) or labels (n,), as uint8."""
    try:
        with _open_maybe_gz(path) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but the file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# CIFAR's batches are Python pickles. Only what a numpy array needs is allowed to load, so a file
# that passed no checksum (a user's copy) cannot run code.
_ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # _codecs.encode: how a Python 3 pickle (protocol 2) spells a bytes object; it runs no user code.
        if (module.split(".")[0] == "numpy" and name in _ALLOWED) or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{where}: cannot read as a CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or "data" not in obj:
        raise DataError(f"{where}: not a CIFAR batch (no 'data' entry)")
    return obj


def _members(source: Path, names: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each wanted file, from a .tar.gz archive or a folder holding the extracted files."""
    if source.is_dir():
        for name in names:
            path = source / name
            if not path.is_file():
                raise DataError(f"{source}: missing {name}")
            yield name, path.read_bytes()
        return
    wanted = set(names)
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name in wanted:
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file always has one
                    yield member.name, handle.read()
                    wanted.discard(member.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{source}: cannot read the archive ({type(exc).__name__}: {exc})") from None
    if wanted:
        raise DataError(f"{source}: the archive lacks {', '.join(sorted(wanted))}")


def read_cifar(source: Path, hundred: bool) -> Arrays:
    """CIFAR-10 or CIFAR-100 from its python .tar.gz (or the extracted folder's parent): images (n, 3, 32, 32) uint8.

    CIFAR-100 gives fine labels as y_* and the 20 superclasses as y_*_coarse.
    """
    if hundred:
        base, train, test = "cifar-100-python", ["train"], ["test"]
    else:
        base, train, test = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    names = [f"{base}/{n}" for n in train + test]
    batches = {name: _unpickle(data, f"{source}:{name}") for name, data in _members(source, names)}
    out: Arrays = {}
    for split, parts in (("train", train), ("test", test)):
        got = [batches[f"{base}/{p}"] for p in parts]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in got])
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise DataError(f"{source}: {split} images have shape {x.shape}, expected (n, 3072)")
        out[f"x_{split}"] = x.reshape(-1, 3, 32, 32)
        key = "fine_labels" if hundred else "labels"
        out[f"y_{split}"] = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in got])
        if hundred:
            out[f"y_{split}_coarse"] = np.concatenate([np.asarray(b["coarse_labels"], dtype=np.int64) for b in got])
        if len(out[f"y_{split}"]) != len(x):
            raise DataError(f"{source}: {len(x)} {split} images but {len(out[f'y_{split}'])} labels")
    return out


def _stl_images(data: bytes, where: str) -> np.ndarray:
    if len(data) % (3 * 96 * 96):
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of 3x96x96 images")
    # Stored column-major per channel (as torchvision reads them): swap to (c, h, w).
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)


def read_stl10(source: Path, unlabeled: bool) -> Arrays:
    """STL-10 from stl10_binary.tar.gz (or the folder holding stl10_binary/): train/test images (n, 3, 96, 96) uint8.

    Labels are stored 1..10 and returned 0..9. With `unlabeled`, x_unlabeled holds the 100000
    unlabelled images (2.8 GB; decoding them needs about twice that in memory, once).
    """
    base = "stl10_binary"
    parts = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"] + (["unlabeled_X.bin"] if unlabeled else [])
    out: Arrays = {}
    for name, data in _members(source, [f"{base}/{p}" for p in parts]):
        where = f"{source}:{name}"
        stem = name.rsplit("/", 1)[1][: -len(".bin")]
        split, kind = stem.split("_")
        if kind == "X":
            array = np.ascontiguousarray(_stl_images(data, where))
            key = f"x_{split}"
        else:
            array = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 1
            key = f"y_{split}"
        out[key] = array
    for split in ("train", "test"):
        if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise DataError(f"{source}: {len(out[f'x_{split}'])} {split} images but {len(out[f'y_{split}'])} labels")
    return out
