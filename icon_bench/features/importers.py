"""Importers for features made by other code: TEMI's folders (`embeddings.pt`, `label.pt`, `knn.pt`) and TURTLE's `{dataset}_{split}.npy`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.errors import DataError
from icon_bench.features.cache import file_sha256
from icon_bench.features.finish import write_cache

__all__ = ["import_temi", "import_turtle"]


def _torch_file(path: Path) -> np.ndarray:
    """A tensor saved with torch.save, read without running pickled code (weights_only=True)."""
    import torch

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a tensor file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{path}: expected one tensor, got {type(obj).__name__}")
    return obj.detach().cpu().numpy()


def _temi_split(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x = _torch_file(folder / "embeddings.pt")
    y = _torch_file(folder / "label.pt").reshape(-1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{folder}: embeddings.pt has {len(x)} rows but label.pt {len(y)}")
    knn = _torch_file(folder / "knn.pt").astype(np.int64) if (folder / "knn.pt").is_file() else None
    if knn is not None and (knn.ndim != 2 or len(knn) != len(x)):
        raise DataError(f"{folder}: knn.pt must be (n, k) for the {len(x)} rows, got {knn.shape}")
    return x.reshape(len(x), -1), y, knn


def _identity(kind: str, sources: list[Path], label: str, dtype: str, knn: int) -> dict[str, Any]:
    return {
        "backbone": {"plugin": f"import:{kind}", "model": label, "ref": None},
        "dataset": {"name": label, "source": {str(p): file_sha256(p) for p in sources}},
        "views": None,
        "dtype": dtype,
        "knn": {"k": knn, "metric": "cosine"} if knn else None,
    }


def _labels(ys: list[np.ndarray]) -> int:
    return int(max(int(y.max()) for y in ys)) + 1


def import_temi(src: str | os.PathLike[str], out: str | os.PathLike[str], *, test: str | None = None,
                label: str | None = None, dtype: str = "float32", knn: int = 50) -> Path:
    """A TEMI embedding folder (train) and optionally its test folder -> a feature cache in `out`.

    TEMI's own knn.pt is kept as the graph (its first column dropped when it lists the row itself);
    without one, the cosine graph is computed (`knn`). Without `test`, the train rows are scored.
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    x, y, graph = _temi_split(src)
    xt, yt, _ = _temi_split(Path(test).expanduser()) if test else (x, y, None)
    if graph is not None and bool((graph[:, 0] == np.arange(len(graph))).all()):
        graph = graph[:, 1:]  # TEMI's graph starts with the row itself; ours excludes it
    arrays = {
        "features_train": x.astype(dtype),
        "labels_train": y,
        "features_test": xt.astype(dtype),
        "labels_test": yt,
    }
    if graph is not None:
        arrays["knn_train"] = np.ascontiguousarray(graph)
    name = label or src.name
    sources = [src / f for f in ("embeddings.pt", "label.pt", "knn.pt") if (src / f).is_file()]
    sources += [Path(test).expanduser() / f for f in ("embeddings.pt", "label.pt")] if test else []
    k = int(graph.shape[1]) if graph is not None else knn
    identity = _identity("temi", sources, name, dtype, k)
    extra = {"label": name, "num_classes": _labels([y, yt]), "dim": int(x.shape[1]), "imported_from": str(src)}
    write_cache(out, arrays, identity, extra, knn=0 if graph is not None else knn)
    return out


def import_turtle(src: str | os.PathLike[str], out: str | os.PathLike[str], *, dataset: str,
                  labels: str | None = None, label: str | None = None, dtype: str = "float32", knn: int = 50) -> Path:
    """TURTLE's `{dataset}_{split}.npy` representations (and labels, same names, in `labels`, default
    `<src>/../../labels` as TURTLE lays them out) -> a feature cache in `out`; train, and val or test."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    label_dir = Path(labels).expanduser() if labels else src.parent.parent / "labels"
    found = {m.group(1): p for p in src.glob(f"{dataset}_*.npy") if (m := re.fullmatch(rf"{re.escape(dataset)}_(\w+)\.npy", p.name))}
    test = "test" if "test" in found else "val"
    if "train" not in found or test not in found:
        raise DataError(f"{src}: need {dataset}_train.npy and {dataset}_val.npy or {dataset}_test.npy; found {sorted(found) or 'none'}")
    arrays, sources = {}, []
    for split, name in (("train", "train"), ("test", test)):
        xp, yp = found[name], label_dir / f"{dataset}_{name}.npy"
        if not yp.is_file():
            raise DataError(f"{yp}: labels not found (give the labels folder with --labels)")
        x, y = np.load(xp, allow_pickle=False), np.load(yp, allow_pickle=False).reshape(-1).astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{xp}: {len(x)} rows but {yp.name} has {len(y)} labels")
        arrays[f"features_{split}"], arrays[f"labels_{split}"] = x.reshape(len(x), -1).astype(dtype), y
        sources += [xp, yp]
    name = label or f"{dataset}-{src.name}"
    identity = _identity("turtle", sources, name, dtype, knn)
    extra = {"label": name, "num_classes": _labels([arrays["labels_train"], arrays["labels_test"]]),
             "dim": int(arrays["features_train"].shape[1]), "imported_from": str(src)}
    write_cache(out, arrays, identity, extra, knn=knn)
    return out
