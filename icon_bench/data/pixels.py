"""`Pixels`: how uint8 image rows become the float32 rows a model reads, applied per batch (or once, on demand)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Pixels", "rows_per_chunk"]

# value / 255 as numpy's float32 division rounds it (what the rows were before they stayed uint8): a
# table, not a division on the device, since CUDA divides by a scalar as a multiplication by its
# reciprocal, which differs in the last bit for some values.
_TABLE = torch.from_numpy(np.divide(np.arange(256, dtype=np.uint8), np.float32(255.0), dtype=np.float32))


def rows_per_chunk(x: Any, budget: int = 1 << 24) -> int:
    """Rows of a 2-D array or tensor per chunk of about ``budget`` elements (temporaries stay small)."""
    return max(1, budget // max(1, int(np.prod(x.shape[1:]))))


@dataclasses.dataclass(frozen=True)
class Pixels:
    """uint8 rows -> float32: v / 255, then (v - mean) / std per feature when the data is standardised.

    `DataSplits` keeps image rows uint8 (memory-mapped from the decoded cache when nothing re-indexed
    them) with a `Pixels`; the trainer converts each batch on its device, and reading `x_train`
    converts the whole split once. Either way the values are those of converting on load.
    """

    mean: Tensor | None = None  # float32, the shape of one row; fitted on train by `standardize`
    std: Tensor | None = None
    table: Tensor = dataclasses.field(default=_TABLE, repr=False)

    def __call__(self, x: Tensor) -> Tensor:
        """float32 rows of the uint8 rows `x` (any leading shape), on x's device."""
        if x.device.type == "cpu":
            # The same float32 division in numpy (the table's own rule), a third of a gather's time.
            out = torch.from_numpy(np.divide(x.numpy(), np.float32(255.0), dtype=np.float32))
        else:
            out = self.table[x.long()]
        if self.mean is not None and self.std is not None:
            out = torch.div(out - self.mean, self.std)
        return out

    def rows(self, x: Tensor) -> Tensor:
        """The whole of `x` converted, a chunk of rows at a time (no int64 copy of all of it)."""
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        step = rows_per_chunk(x)
        for a in range(0, len(x), step):
            out[a : a + step] = self(x[a : a + step])
        return out

    def to(self, device: torch.device | str) -> Pixels:
        """This conversion with its table (and mean, std) on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731 - a one-line helper
        return Pixels(mean=move(self.mean), std=move(self.std), table=self.table.to(device))

    def describe(self) -> str:
        """What the conversion does, for content hashes: the scale and the digest of mean and std."""
        if self.mean is None or self.std is None:
            return "uint8/255"
        h = hashlib.sha256()
        for t in (self.mean, self.std):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return f"uint8/255-standardized-{h.hexdigest()[:16]}"


class StoredRows:
    """The `x_train` / `x_val` / `x_test` attribute of `DataSplits`: float32 rows, whatever is stored.

    Stored uint8 rows (the splits have `pixels`) read as float32, converted on the first read and
    kept (shared by two attributes storing one tensor: transductive data); `DataSplits.stored(split)`
    gives the stored rows without converting. A write replaces the rows (and drops the converted copy).
    """

    def __init__(self, name: str) -> None:
        self.name = name  # the instance attribute it stands for

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        stored = obj.__dict__.get(self.name)
        pixels = obj.__dict__.get("pixels")
        if pixels is None or not isinstance(stored, Tensor) or stored.dtype != torch.uint8:
            return stored
        floats = obj.__dict__.setdefault("_floats", {})
        for kept, kept_pixels, converted in floats.values():
            if kept is stored and kept_pixels is pixels:
                return converted
        converted = pixels.rows(stored)
        floats[self.name] = (stored, pixels, converted)
        return converted

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value
        obj.__dict__.get("_floats", {}).pop(self.name, None)


def pack_images(images: dict[str, np.ndarray], stored: dict[str, Any]) -> dict[str, Any]:
    """`DataSplits.images` for pickling: an entry that is a view of some split's stored uint8 rows becomes a
    note (split, first row, rows, image shape), so Ray's object store holds those pixels once, not twice."""
    packed: dict[str, Any] = {}
    for key, array in images.items():
        packed[key] = array
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or array.dtype != np.uint8:
            continue
        start = array.__array_interface__["data"][0]
        for split, rows in stored.items():
            if not isinstance(rows, Tensor) or rows.dtype != torch.uint8 or not rows.is_contiguous() or not len(rows):
                continue
            row_bytes = rows[0].numel()
            offset = start - rows.data_ptr()
            if 0 <= offset and offset % row_bytes == 0 and offset + array.nbytes <= rows.numel():
                packed[key] = ("<rows>", split, offset // row_bytes, len(array), tuple(array.shape[1:]))
                break
    return packed


def unpack_images(packed: dict[str, Any], stored: dict[str, Any]) -> dict[str, np.ndarray]:
    """`pack_images` undone: each note becomes a view of the split's (unpickled) rows again."""
    images = {}
    for key, value in packed.items():
        if isinstance(value, tuple) and value and value[0] == "<rows>":
            _, split, first, count, shape = value
            value = stored[split].numpy()[first : first + count].reshape(count, *shape)
        images[key] = value
    return images
