"""`load_dataset`: build a registered dataset, load it, apply the common options; the built-ins' hook."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from icon_bench.data.builtin import blobs, breast_cancer, digits, iris, wine
from icon_bench.data.files import arrays
from icon_bench.data.graph import _cached_knn, cache_root, content_hash
from icon_bench.data.splits import DataSplits, stratified_subset
from icon_bench.errors import DataError, UnknownNameError, did_you_mean
from icon_bench.hooks.specs import hookimpl

__all__ = ["COMMON_OPTIONS", "COMMON_OPTION_TYPES", "load_dataset"]


#: Options every dataset takes; `load_dataset` applies them after `Dataset.load()`, in this order:
#: subset, standardize, pca, knn.
COMMON_OPTIONS: dict[str, Any] = {
    "subset": None,
    "subset_seed": 0,
    "standardize": False,
    "pca": None,
    "knn": None,
    "knn_metric": "cosine",
}
#: Their types and ranges, checked when a suite is loaded (run/spec_check.py). A subset caps rows:
#: beyond 2**31 it can only be a slip (1e12 is not a row count any data set here reaches).
COMMON_OPTION_TYPES: dict[str, Any] = {
    "subset": Annotated[int, Field(ge=1, le=2**31 - 1)] | None,
    "subset_seed": Annotated[int, Field(ge=0)],
    "standardize": bool,
    "pca": Annotated[int, Field(ge=1)] | None,
    "knn": Annotated[int, Field(ge=1)] | None,
    "knn_metric": Literal["cosine", "euclidean"],
}


def _standardize(data: DataSplits) -> dict[str, Any]:
    # Per feature (per pixel for images), fitted on train; constant features keep scale 1.
    n = len(data.x_train)
    flat = data.x_train.reshape(n, -1).double()
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    shape = data.x_train.shape[1:]
    mean_f, std_f = mean.float().reshape(shape), std.float().reshape(shape)
    data.x_train = (data.x_train - mean_f) / std_f
    data.x_test = (data.x_test - mean_f) / std_f
    return {"step": "standardize", "fit_on": "train"}


def _pca(data: DataSplits, n_components: int) -> dict[str, Any]:
    if data.x_train.dim() != 2:
        raise DataError(
            f"dataset {data.name!r}: pca needs vector features, got images {tuple(data.x_train.shape[1:])}; "
            "load them flattened"
        )
    n, d = data.x_train.shape
    if not 1 <= n_components <= min(n, d):
        raise DataError(f"dataset {data.name!r}: pca={n_components} must be in 1..{min(n, d)}")
    x = data.x_train.double()
    mean = x.mean(0)
    xc = x - mean
    # Eigenvectors of the d x d covariance: cheap for tall data, exact like a full SVD.
    evals, evecs = torch.linalg.eigh(xc.T @ xc / max(n - 1, 1))
    order = torch.argsort(evals, descending=True)[:n_components]
    comps = evecs[:, order]
    # Fix each component's sign (largest loading positive) so results do not depend on the LAPACK build.
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * signs
    explained = float(evals[order].sum() / evals.clamp_min(0).sum())
    data.x_train = (xc @ comps).float()
    data.x_test = ((data.x_test.double() - mean) @ comps).float()
    data.meta.pop("image_shape", None)
    return {"step": "pca", "n_components": n_components, "fit_on": "train", "explained_variance": explained}


def load_dataset(spec: Any, cache_dir: str | os.PathLike[str] | None = None) -> DataSplits:
    """Build a dataset from a name or {"name": ..., **params}, load it, and apply the common options.

    Options every dataset takes: subset (cap each split at that many rows, stratified, seeded by
    subset_seed), standardize (per feature, fitted on train), pca (components fitted on train;
    vectors only), knn with knn_metric ("cosine" or "euclidean") for the global kNN graph over the
    train split, cached under `cache_dir` (default $ICON_BENCH_CACHE or ~/.cache/icon-bench).
    """
    from icon_bench.hooks.registry import get_registry, split_spec

    name, params = split_spec(spec)
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
    dataset = component.create(**params)
    data = dataset.load()
    if not isinstance(data, DataSplits):
        raise DataError(f"dataset {name!r}: load() returned {type(data).__name__}, not DataSplits")
    data.meta = dict(data.meta)
    data.check()
    data.meta["dataset"] = {"name": name, "params": _jsonable(params)}
    data.meta["raw_content_hash"] = content_hash(data)
    applied: list[dict[str, Any]] = []

    subset = options["subset"]
    if subset is not None:
        if int(subset) < 1:
            raise DataError(f"dataset {name!r}: subset must be a positive row count, got {subset}")
        seed = int(options["subset_seed"])
        for split in ("train", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            idx = stratified_subset(y, int(subset), seed)
            setattr(data, f"x_{split}", x[idx].contiguous())
            setattr(data, f"y_{split}", y[idx].contiguous())
        applied.append({"step": "subset", "max_rows": int(subset), "seed": seed, "stratified": True})
    if options["standardize"]:
        applied.append(_standardize(data))
    if options["pca"] is not None:
        applied.append(_pca(data, int(options["pca"])))
    data.meta["content_hash"] = content_hash(data)
    if options["knn"] is not None:
        k, metric = int(options["knn"]), str(options["knn_metric"])
        if metric not in ("cosine", "euclidean"):
            hint = did_you_mean(metric, ["cosine", "euclidean"])
            raise DataError(
                f"dataset {name!r}: knn_metric must be 'cosine' or 'euclidean', got {metric!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        data.knn_train = _cached_knn(data.x_train, k, metric, cache_root(cache_dir), data.meta)
        applied.append({"step": "knn", "k": k, "metric": metric, "cache": data.meta["knn_cache"]})
    data.meta["preprocessing"] = applied
    data.meta["options"] = _jsonable({k: v for k, v in options.items() if v != COMMON_OPTIONS[k]})
    data.meta.update(n_train=len(data.x_train), n_test=len(data.x_test))
    return data


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
