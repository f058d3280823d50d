"""Small hostile and odd array files for the limit tests and tests/bad_suites/data/ (written by `write_all`)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

DATA = Path(__file__).resolve().parent / "bad_suites" / "data"


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def forged_header(path: Path, shape: tuple[int, ...] = (10**9, 10**4)) -> Path:
    """An .npz whose x.npy header claims `shape` (40 TB of float32) and holds no data: under 1 kB."""
    y = io.BytesIO()
    np.save(y, np.arange(10) % 2)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", _npy_header(shape))
        zf.writestr("y.npy", y.getvalue())
    return path


def deflate_bomb(path: Path, gigabytes: float = 2.5) -> Path:
    """A real deflate bomb: x.npy of `gigabytes` of float32 zeros, about 230:1 (level 1), some 11 MB; ~3 CPU s."""
    block = 64 << 20
    blocks = max(1, int(gigabytes * 1e9) // block)
    zeros = bytes(block)
    y = io.BytesIO()
    np.save(y, np.arange(1000) % 2)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
        zf.writestr("y.npy", y.getvalue())
        with zf.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((blocks * block // 4000, 1000)))
            for _ in range(blocks):
                member.write(zeros)
    return path


def write_all(folder: Path = DATA) -> None:
    """The small files tests/bad_suites/ names (each under 2 kB)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    forged_header(folder / "forged_header.npz")
    x = rng.normal(size=(100, 4)).astype(np.float32)
    np.savez_compressed(folder / "small.npz", x=x, y=np.arange(100) % 2)
    np.savez_compressed(folder / "one_class.npz", x=x[:50], y=np.zeros(50, dtype=np.int64))
    np.savez_compressed(folder / "ambiguous.npz", x=x[:60], y=np.arange(60) % 2, test_inputs=x[60:],
                        test_targets=np.arange(40) % 2)  # test arrays not named after the train ones
