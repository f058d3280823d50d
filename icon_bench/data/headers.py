"""Array shapes and sizes read from .npy / .npz headers without loading the data, and the bound on them."""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from icon_bench.errors import DataError

__all__ = ["MEMORY_ENV", "ArrayHeader", "check_array_bytes", "machine_memory", "memory_limit", "parse_size", "read_headers"]

#: The memory a trial may use, in bytes, when a run raised or lowered it (`icon-bench run --max-memory`):
#: set in the environment so that the loaders in this process and in the Ray workers it starts see it.
MEMORY_ENV = "ICON_BENCH_MAX_MEMORY"  # also named in run/suite/limits.py, which sets it


@dataclass(frozen=True)
class ArrayHeader:
    """One array as its header declares it: name (npz key, or the file for .npy), shape, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored: int | None = None  # bytes the member takes in a compressed .npz (None: not compressed)

    @property
    def nbytes(self) -> int:
        """Bytes the array takes once loaded (Python integers: a forged shape may exceed int64)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


#: A compressed member above BOMB_BYTES that inflates more than BOMB_RATIO times is refused unless a
#: memory bound was given: image and feature arrays compress 2-20:1 (MNIST's uint8 pixels about 5:1),
#: a deflate bomb of zeros 200-1000:1.
BOMB_BYTES = 256 << 20
BOMB_RATIO = 100


def _read_header(fh: IO[bytes], name: str, where: str) -> ArrayHeader:
    """The header at the start of an .npy stream; only its first few hundred bytes are read (or inflated)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
    except Exception as exc:  # numpy raises ValueError and others for a malformed header
        raise DataError(f"{where}: {name}: not an .npy array header ({exc})") from None
    return ArrayHeader(name, tuple(int(s) for s in shape), np.dtype(dtype))


def read_headers(path: str | os.PathLike[str]) -> list[ArrayHeader]:
    """The arrays of an .npy or .npz file as their headers declare them; nothing else is read.

    A compressed .npz whose data inflates to gigabytes (a "deflate bomb" of a few MB) is thus
    known by its size before any of it is inflated.
    """
    path = Path(path)
    where = str(path)
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as fh:
            return [_read_header(fh, path.name, where)]
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: cannot read as .npz ({exc})") from None
    headers = []
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue  # np.load lists only the .npy members as keys
            with archive.open(info) as member:
                header = _read_header(member, info.filename[: -len(".npy")], where)
            stored = info.compress_size if info.compress_type != zipfile.ZIP_STORED else None
            headers.append(ArrayHeader(header.name, header.shape, header.dtype, stored))
    return headers


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or less where a cgroup limit says so."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def memory_limit() -> int:
    """What a trial may use: $ICON_BENCH_MAX_MEMORY when set (by --max-memory), else the machine's memory."""
    value = os.environ.get(MEMORY_ENV)
    return int(value) if value and value.isdigit() else machine_memory()


def parse_size(text: str) -> int:
    """Bytes from `64G`, `512M`, `1.5T`, `2e9` (k/M/G/T are powers of 1024; a plain number is bytes)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"a memory size such as 64G, 512M or 2000000000, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a memory size above 0, got {text!r}")
    return int(value * scale)


def check_array_bytes(path: str | os.PathLike[str], limit: int | None = None) -> list[ArrayHeader]:
    """The file's headers; DataError when its arrays would take more than `limit` bytes (default: the machine's)."""
    headers = read_headers(path)
    limit = memory_limit() if limit is None else limit
    for h in headers if MEMORY_ENV not in os.environ else ():  # a run given --max-memory loads what fits it
        if h.stored is not None and h.nbytes > BOMB_BYTES and h.nbytes > BOMB_RATIO * max(h.stored, 1):
            raise DataError(
                f"{path}: {h.name} inflates from {_size(h.stored)} to {_size(h.nbytes)} ({h.nbytes // max(h.stored, 1)}:1): "
                "a decompression bomb, refused unread (--max-memory SIZE loads it anyway)"
            )
    total = sum(h.nbytes for h in headers)
    if total > limit:
        largest = max(headers, key=lambda h: h.nbytes)
        raise DataError(
            f"{path}: its arrays take {_size(total)} once loaded ({largest.name} {list(largest.shape)} "
            f"{largest.dtype}), more than the {_size(limit)} allowed; refused before reading (pass --max-memory to raise it)"
        )
    return headers


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}" if unit != "B" else f"{nbytes} B"
        nbytes /= 1000  # type: ignore[assignment]
    raise AssertionError
