"""Decoded arrays cached as memory-mappable .npy files beside a dataset's archives, written once under a lock."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.errors import DataError

__all__ = ["DecodedCache", "channel_stats"]

#: Raise when the decoded layout changes, so arrays written by an older rule are decoded again.
DECODED_VERSION = 1
LOCK_TIMEOUT_S = 3600.0


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images (n, c, h, w) on the [0, 1] scale, in float64 chunks."""
    c = images.shape[1]
    total = np.zeros(c)
    squares = np.zeros(c)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


class DecodedCache:
    """`folder`/decoded/<part>.json plus one .npy per array: a part (e.g. "labelled") is complete once its json exists.

    Arrays are written to temporary files and renamed; the json goes last, so a reader that sees it
    sees every array, and a process killed while decoding leaves nothing a reader would trust.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.decoded = folder / "decoded"

    def info(self, part: str) -> dict[str, Any] | None:
        path = self.decoded / f"{part}.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or info.get("version") != DECODED_VERSION:
            return None
        if not all((self.decoded / f"{key}.npy").is_file() for key in info.get("arrays", [])):
            return None
        return info

    def read(self, part: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The part's arrays, memory-mapped read-only, and its info; None when it is not cached (or unreadable)."""
        info = self.info(part)
        if info is None:
            return None
        try:
            arrays = {key: np.load(self.decoded / f"{key}.npy", mmap_mode="r") for key in info["arrays"]}
        except (OSError, ValueError):
            return None
        return arrays, info

    def write(self, part: str, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        self.decoded.mkdir(parents=True, exist_ok=True)
        for key, array in arrays.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.decoded)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                os.replace(tmp, self.decoded / f"{key}.npy")
            finally:
                Path(tmp).unlink(missing_ok=True)
        record = {"version": DECODED_VERSION, "arrays": sorted(arrays), **info}
        fd, tmp = tempfile.mkstemp(prefix=f".{part}.", suffix=".part", dir=self.decoded)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, self.decoded / f"{part}.json")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the dataset folder's lock: one process downloads and decodes, the others wait and then read."""
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / ".lock"))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise DataError(f"{self.folder}: another process has held the lock for over an hour; "
                            f"if none is running, delete {self.folder / '.lock'}") from None
        try:
            yield
        finally:
            lock.release()

    def get_or_make(
        self, part: str, make: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The cached part, else `make()`'s arrays written and read back (under the lock, so made once)."""
        found = self.read(part)
        if found is not None:
            return found
        with self.lock():
            found = self.read(part)  # another process may have written it while this one waited
            if found is None:
                arrays, info = make()
                self.write(part, arrays, info)
                found = self.read(part)
        if found is None:  # pragma: no cover - written just above
            raise DataError(f"{self.decoded}: cannot read back the decoded arrays")
        return found
