"""`load_dataset`: build a registered dataset, load it, apply the common options; the built-ins' hook."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from icon_bench.data.builtin import blobs, breast_cancer, digits, iris, wine
from icon_bench.data.files import arrays
from icon_bench.data.graph import content_hash, global_knn, graph_record
from icon_bench.data.imagefolder import imagefolder
from icon_bench.data.options import COMMON_OPTION_TYPES, COMMON_OPTIONS, dataset_label
from icon_bench.data.splits import DataSplits, Pixels, rows_per_chunk, stratified_subset, val_indices
from icon_bench.data.vision import cifar10, cifar100, fashion_mnist, mnist, stl10
from icon_bench.errors import DataError, UnknownNameError, did_you_mean
from icon_bench.hooks.specs import hookimpl

__all__ = ["COMMON_OPTIONS", "COMMON_OPTION_TYPES", "dataset_label", "load_dataset"]


def _standardize(data: DataSplits) -> dict[str, Any]:
    # Per feature (per pixel for images), fitted on train; constant features keep scale 1. Mean and
    # variance are summed in float64 over chunks of rows (no float64 copy of the features).
    stored = data.stored("train")
    n = len(stored)
    flat = stored.reshape(n, -1)
    step = rows_per_chunk(flat)
    rows = data.pixels if data.pixels is not None else (lambda x: x)  # uint8 rows: their float values
    total = torch.zeros(flat.shape[1], dtype=torch.float64)
    for a in range(0, n, step):
        total += rows(flat[a : a + step]).double().sum(0)
    mean = total / max(n, 1)
    sq = torch.zeros_like(total)
    for a in range(0, n, step):
        sq += ((rows(flat[a : a + step]).double() - mean) ** 2).sum(0)
    std = (sq / max(n, 1)).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    shape = stored.shape[1:]
    mean_f, std_f = mean.float().reshape(shape), std.float().reshape(shape)
    if data.pixels is not None:
        # Rows stay uint8: the conversion now standardises too (the same float32 operations as below).
        data.pixels = Pixels(mean=mean_f, std=std_f)
        return {"step": "standardize", "fit_on": "train"}
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        out = torch.empty_like(x)
        for a in range(0, len(x), step):
            torch.div(x[a : a + step] - mean_f, std_f, out=out[a : a + step])
        setattr(data, f"x_{split}", out)
    return {"step": "standardize", "fit_on": "train"}


def _pca(data: DataSplits, n_components: int) -> dict[str, Any]:
    if data.stored("train").dim() != 2:
        raise DataError(
            f"dataset {data.name!r}: pca needs vector features, got images {tuple(data.stored('train').shape[1:])}; "
            "load them flattened"
        )
    n, d = data.stored("train").shape
    if not 1 <= n_components <= min(n, d):
        raise DataError(f"dataset {data.name!r}: pca={n_components} must be in 1..{min(n, d)}")
    x = data.x_train
    step = rows_per_chunk(x)
    # Mean and covariance summed in float64 a chunk of rows at a time: no float64 copy of the features.
    mean = sum((x[a : a + step].double().sum(0) for a in range(0, n, step)), torch.zeros(d, dtype=torch.float64)) / n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for a in range(0, n, step):
        xc = x[a : a + step].double() - mean
        cov += xc.T @ xc
    # Eigenvectors of the d x d covariance: cheap for tall data, exact like a full SVD.
    evals, evecs = torch.linalg.eigh(cov / max(n - 1, 1))
    order = torch.argsort(evals, descending=True)[:n_components]
    comps = evecs[:, order]
    # Fix each component's sign (largest loading positive) so results do not depend on the LAPACK build.
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * signs
    explained = float(evals[order].sum() / evals.clamp_min(0).sum())
    for split in ("train", "val", "test"):
        rows = getattr(data, f"x_{split}")
        out = rows.new_empty((len(rows), n_components))
        for a in range(0, len(rows), step):
            out[a : a + step] = ((rows[a : a + step].double() - mean) @ comps).float()
        setattr(data, f"x_{split}", out)
    data.pixels = None  # the rows are PCA scores now, float32
    data.meta.pop("image_shape", None)
    return {"step": "pca", "n_components": n_components, "fit_on": "train", "explained_variance": explained}


def load_dataset(spec: Any, cache_dir: str | os.PathLike[str] | None = None) -> DataSplits:
    """Build a dataset from a name or {"name": ..., **params}, load it, and apply the common options.

    Options every dataset takes (docs/architecture.md, Data): subset (cap train and test at that
    many rows, stratified, seeded by subset_seed); protocol 2's val split (val_fraction of train,
    stratified, seeded by val_seed; 0 for none) or transductive (train and test both hold all
    rows); standardize (per feature, fitted on train); pca (components fitted on train; vectors
    only); knn with knn_metric ("cosine" or "euclidean") for the global kNN graph over the train
    split, cached in this process and under `cache_dir` (default $ICON_BENCH_CACHE or
    ~/.cache/icon-bench; meta["knn_cache"] says where it came from: memory, disk or computed); label
    (the name reports give it).
    """
    from icon_bench.hooks.registry import get_registry, split_spec

    name, params = split_spec(spec)
    entry = {"name": name, **params}  # as written, for the label
    component = get_registry().get("dataset", name)
    options = dict(COMMON_OPTIONS)
    for key in list(params):
        if key in COMMON_OPTIONS:
            options[key] = params.pop(key)
    if not component.accepts_any:
        known = [p.name for p in component.params]
        for key in params:
            if key not in known:
                raise UnknownNameError("parameter", key, known + list(COMMON_OPTIONS), where=f"dataset {name!r}")
    _check_split_options(name, options, entry)
    data = component.create(**params).load()
    if not isinstance(data, DataSplits):
        raise DataError(f"dataset {name!r}: load() returned {type(data).__name__}, not DataSplits")
    data.meta = dict(data.meta)
    if data.images is not None:
        data.images = dict(data.images)  # load_dataset re-indexes it below; the dataset's dict stays as it was
    data.check()
    if options["transductive"] and data.meta.get("unlabelled_rows"):
        raise DataError(f"dataset {name!r}: transductive scores every row, and {data.meta['unlabelled_rows']} train rows "
                        "have no label (unlabeled: true); drop one of them")
    data.meta["dataset"] = {"name": name, "params": _jsonable(params)}
    data.meta["raw_content_hash"] = content_hash(data)
    applied: list[dict[str, Any]] = []
    if options["subset"] is not None:
        applied.append(_subset(data, options))
    applied.append(_protocol_splits(data, options))
    _images_follow_rows(data)
    if options["standardize"]:
        applied.append(_standardize(data))
    if options["pca"] is not None:
        applied.append(_pca(data, int(options["pca"])))
    if options["transductive"]:
        # Standardize and pca wrote new tensors: test is the train rows again, not a copy of them.
        data.x_test, data.y_test = data.stored("train"), data.y_train
    data.meta["content_hash"] = content_hash(data)
    if options["knn"] is not None:
        applied.append(_knn(data, options, cache_dir))
    data.meta["preprocessing"] = applied
    data.meta["options"] = _jsonable({k: v for k, v in options.items() if v != COMMON_OPTIONS[k]})
    data.meta["label"] = dataset_label(entry, data.meta)
    data.meta.update(**{f"n_{split}": len(data.stored(split)) for split in ("train", "val", "test")})
    return data


def _check_split_options(name: str, options: dict[str, Any], entry: dict[str, Any]) -> None:
    """Reject split options that contradict each other before anything is loaded."""
    where = f"dataset {name!r}"
    fraction = options["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise DataError(f"{where}: val_fraction must be a number in [0, 1), got {fraction!r}")
    if not isinstance(options["transductive"], bool):
        raise DataError(f"{where}: transductive must be true or false, got {options['transductive']!r}")
    if options["transductive"]:
        if entry.get("val_fraction"):
            raise DataError(
                f"{where}: transductive fits and scores on all rows, so it has no val split; "
                f"drop val_fraction={entry['val_fraction']!r} (or transductive)"
            )
        options["val_fraction"] = 0.0
    if options["label"] is not None and (not isinstance(options["label"], str) or not options["label"].strip()):
        raise DataError(f"{where}: label must be a non-empty string, got {options['label']!r}")


def _subset(data: DataSplits, options: dict[str, Any]) -> dict[str, Any]:
    subset = options["subset"]
    if int(subset) < 1:
        raise DataError(f"dataset {data.name!r}: subset must be a positive row count, got {subset}")
    seed = int(options["subset_seed"])
    for split in ("train", "test"):
        x, y = data.stored(split), getattr(data, f"y_{split}")
        idx = stratified_subset(y, int(subset), seed)
        if split == "train":
            _follow_train_rows(data, idx)
        setattr(data, f"x_{split}", x[idx].contiguous())
        setattr(data, f"y_{split}", y[idx].contiguous())
        if data.images is not None and split in data.images and data.pixels is None:
            data.images[split] = data.images[split][idx.numpy()]
    return {"step": "subset", "max_rows": int(subset), "seed": seed, "stratified": True}


def _protocol_splits(data: DataSplits, options: dict[str, Any]) -> dict[str, Any]:
    """Protocol 2: carve the val split from train, or (transductive) put all rows in both train and test."""
    fraction, seed = float(options["val_fraction"]), int(options["val_seed"])
    data.meta.update(val_fraction=fraction, val_seed=seed, transductive=bool(options["transductive"]))
    if options["transductive"]:
        _follow_train_rows(data, None)
        data.x_train = torch.cat([data.stored("train"), data.stored("test")]).contiguous()
        data.y_train = torch.cat([data.y_train, data.y_test]).contiguous()
        data.x_test, data.y_test = data.stored("train"), data.y_train
        if data.images is not None and data.pixels is None:
            both = np.concatenate([data.images["train"], data.images["test"]])
            data.images.update(train=both, test=both)
        data.meta["val_split"] = {"n_val": 0}
        return {"step": "transductive", "rows": len(data.y_train), "fit_on": "all rows", "scored_on": "all rows"}
    train, val = val_indices(data.y_train, fraction, seed, f"dataset {data.name!r}")
    _follow_train_rows(data, train)
    if len(val):  # without val rows every row trains: keep the tensors (a copy of all features would be waste)
        x = data.stored("train")
        data.x_val, data.y_val = x[val].contiguous(), data.y_train[val].contiguous()
        data.x_train, data.y_train = x[train].contiguous(), data.y_train[train].contiguous()
    if data.images is not None and data.pixels is None:
        raw = data.images["train"]
        data.images.update(train=raw[train.numpy()], val=raw[val.numpy()])
    data.meta["val_split"] = {"fraction": fraction, "seed": seed, "stratified": True, "n_val": len(val)}
    return {"step": "val_split", "fraction": fraction, "seed": seed, "stratified": True, "n_val": len(val)}


def _images_follow_rows(data: DataSplits) -> None:
    """`data.images` of uint8 rows: each split's rows themselves, seen as (n, c, h, w) (no second copy)."""
    if data.images is None or data.pixels is None:
        return
    shape = data.image_shape
    for split in ("train", "val", "test"):
        rows = data.stored(split)
        data.images[split] = rows.numpy().reshape(len(rows), *shape)
    extra = int(data.meta.get("unlabelled_rows") or 0)
    if extra and "unlabeled" in data.images and int((data.y_train[-extra:] < 0).sum()) == extra:
        data.images["unlabeled"] = data.images["train"][-extra:]  # the last train rows: a view, not a copy


def _follow_train_rows(data: DataSplits, idx: torch.Tensor | None) -> None:
    """Keep what a dataset brings per train row (stored views, its kNN graph) in step when the train rows
    become `idx` (None: rows are added). Views follow the rows; a graph over other rows cannot (its
    neighbours may be gone), so it is dropped and meta says why; an unchanged row set keeps it."""
    if data.views_train is not None:
        data.views_train = None if idx is None else data.views_train[idx]
    if data.knn_train is None:
        return
    if idx is not None and len(idx) == len(data.knn_train) and bool((idx == torch.arange(len(idx))).all()):
        return
    data.knn_train = None
    data.meta["knn_graph"] = {
        **data.meta.get("knn_graph", {}),
        "dropped": "the train rows changed (subset, val_fraction or transductive); set val_fraction: 0 to keep it",
    }


def _knn(data: DataSplits, options: dict[str, Any], cache_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    k, metric = int(options["knn"]), str(options["knn_metric"])
    if metric not in ("cosine", "euclidean"):
        hint = did_you_mean(metric, ["cosine", "euclidean"])
        raise DataError(
            f"dataset {data.meta['dataset']['name']!r}: knn_metric must be 'cosine' or 'euclidean', got {metric!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    given = data.knn_train
    if given is not None and metric == data.meta.get("knn_graph", {}).get("metric") and k <= given.shape[1]:
        # The dataset's own graph (a feature cache's): its first k columns are the k nearest.
        data.knn_train = given[:, :k].contiguous()
        data.meta.update(knn_cache="dataset")
        return {"step": "knn", "k": k, "metric": metric, "cache": "dataset"}
    # The same cache as the graph a method builds: one graph per content, k and metric.
    data.knn_train, source, key = global_knn([data.x_train], k, metric, cache_dir=cache_dir)
    data.meta.update(knn_key=key, knn_cache=source)
    return {"step": "knn", "k": k, "metric": metric, "cache": source, "search": graph_record(key, cache_dir)}


def _jsonable(value: Any) -> Any:
    """A copy that survives json.dumps (tuples to lists, unknown objects to repr)."""
    try:
        return json.loads(json.dumps(value, default=repr))
    except (TypeError, ValueError):
        return repr(value)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    register("digits", digits)
    register("iris", iris)
    register("wine", wine)
    register("breast_cancer", breast_cancer)
    register("blobs", blobs)
    register("arrays", arrays)
    register("mnist", mnist)
    register("fashion_mnist", fashion_mnist)
    register("cifar10", cifar10)
    register("cifar100", cifar100)
    register("stl10", stl10)
    register("imagefolder", imagefolder)
