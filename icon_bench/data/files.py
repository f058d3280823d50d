"""The `arrays` dataset: features and labels from .npy/.npz/.pt/.safetensors/.csv/.parquet files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icon_bench.data.headers import check_array_bytes
from icon_bench.data.splits import Dataset, DataSplits, _make_splits
from icon_bench.errors import DataError, did_you_mean

__all__ = ["ArraysDataset"]


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
            f"{path}: no labels file found beside it (looked for {', '.join(candidates)}); {_set_hint('labels', 'path')}"
        )

    def _keyed(self, path: Path, test_path: Path | None) -> tuple[Any, ...]:
        arrays = _load_keyed(path)
        tarrays = None
        if test_path is not None:
            _require_file(test_path)
            if test_path.suffix.lower() not in _KEY_FORMATS:
                raise DataError(f"{test_path}: test_path must be one of {', '.join(_KEY_FORMATS)}")
            tarrays = _load_keyed(test_path)
        keys = keyed_names(self.params, path, list(arrays), list(tarrays) if tarrays is not None else None)
        x, y = arrays[keys["features"]], arrays[keys["labels"]]
        if "test_features" not in keys:
            return x, y, None, None, keys
        source = tarrays if tarrays is not None else arrays
        return x, y, source[keys["test_features"]], source[keys["test_labels"]], keys

    def _table(self, path: Path, test_path: Path | None) -> tuple[Any, ...]:
        p = self.params
        if p["test_features"] is not None or p["test_labels"] is not None:
            raise DataError(
                f"{path}: a table has no test keys (test_features, test_labels); give the test rows as a second "
                f"table: {_set_hint('test_path', 'table')}"
            )
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


def keyed_names(
    params: Mapping[str, Any], path: Path, names: Sequence[str], test_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Which keys of a keyed file (.npz, .pt, .safetensors) hold features, labels and test arrays.

    From the names alone, so a plan reads them from the file's header and the loader agrees.
    `test_names` are the keys of `test_path`'s file, when given. Without test keys given, the
    file's own split is read when its test arrays are named as the train ones with "train" turned
    into "test" (x_train/y_train -> x_test/y_test, train_x -> test_x, x/y -> x_test/y_test); another key with "test" in its
    name is an ambiguity, refused, rather than a test split silently dropped.
    """
    p = params
    fkey = _pick_key(names, p.get("features"), _FEATURE_KEYS, path, "features")
    lkey = _pick_key(names, p.get("labels"), _LABEL_KEYS, path, "labels")
    keys: dict[str, Any] = {"features": fkey, "labels": lkey}
    tf_given, tl_given = p.get("test_features"), p.get("test_labels")
    if test_names is not None:
        test_path = p.get("test_path")
        tf = _pick_key(test_names, tf_given or fkey, (), Path(str(test_path)), "test_features")
        tl = _pick_key(test_names, tl_given or lkey, (), Path(str(test_path)), "test_labels")
        keys.update(test_path=str(test_path), test_features=tf, test_labels=tl)
        return keys
    if tf_given is None:
        if tl_given is not None:
            raise DataError(f"{path}: test_labels given without test_features")
        # A file that ships its own split (MNIST's x_train/y_train beside x_test/y_test) is read
        # with it: a benchmark should score on the official test rows.
        pair = (_as_test(fkey), _as_test(lkey))
        if None not in pair and set(pair) <= set(names):
            keys.update(test_features=pair[0], test_labels=pair[1])
            return keys
        others = [n for n in names if "test" in n.lower()]
        if others:
            # Else a test split would be drawn from the train rows and those arrays silently dropped.
            raise DataError(
                f"{path}: holds {', '.join(map(repr, others))} beside features {fkey!r} and labels {lkey!r}; "
                "set test_features and test_labels to score on them (or rename them)"
            )
        return keys
    if tl_given is None:
        raise DataError(f"{path}: test_features={tf_given!r} given without test_labels")
    keys["test_features"] = _pick_key(names, tf_given, (), path, "test_features")
    keys["test_labels"] = _pick_key(names, tl_given, (), path, "test_labels")
    return keys


def _as_test(key: str) -> str | None:
    """The test array's name for a train array's name: "train" -> "test" (any case); "x" -> "x_test"."""
    for train, test in (("train", "test"), ("TRAIN", "TEST"), ("Train", "Test")):
        if train in key:
            return key.replace(train, test)
    return f"{key}_test" if key in ("x", "y", "X", "Y") else None


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base.parent / p


#: .npy files from this size on are memory-mapped (copy-on-write) rather than read.
MMAP_BYTES = 1 << 28


def _load_npy(path: Path) -> np.ndarray:
    check_array_bytes(path)  # the header's size, before numpy allocates it
    try:
        # A big file is mapped: float32 features are read from the page cache as used, never copied
        # into private memory unless written (a .npz cannot be mapped: use .npy at scale). Small
        # files are read whole, so rewriting one while a loaded copy is in use changes nothing.
        mode = "c" if path.stat().st_size >= MMAP_BYTES else None
        return np.load(path, allow_pickle=False, mmap_mode=mode)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise DataError(f"{path}: cannot read as .npy ({exc})") from None


def _load_keyed(path: Path) -> dict[str, np.ndarray]:
    """A name -> array mapping from .npz, .pt or .safetensors, without running pickled code."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        check_array_bytes(path)  # the headers' sizes, before anything is inflated
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
    names = container.columns if hasattr(container, "columns") else container
    keys = [str(k) for k in (names.keys() if hasattr(names, "keys") else names)]
    if given is not None:
        if given in keys:
            return given
        hint = did_you_mean(given, keys)
        msg = f"{path}: no {what} {given!r} (dataset.{param})"
        msg += f"; did you mean {' or '.join(map(repr, hint))}?" if hint else f"; it has: {', '.join(keys)}"
        raise DataError(msg)
    for k in defaults:
        if k in keys:
            return k
    raise DataError(
        f"{path}: none of the default {what} names {list(defaults)} is among {keys}; {_set_hint(param, what)}"
    )


def _set_hint(param: str, what: str) -> str:
    """How a user sets a dataset parameter: in the suite's dataset entry, or with --set on the command line."""
    return f"set `{param}: <{what}>` in the suite's dataset entry (or `--set dataset.{param}=<{what}>`)"


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
