"""The options every dataset takes (`COMMON_OPTIONS`) and the name they give a dataset in reports (`dataset_label`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import Field

__all__ = ["COMMON_OPTIONS", "COMMON_OPTION_TYPES", "DEFAULT_SPLITS", "SPLITS", "dataset_label"]

#: The splits a trial's metrics may score (its spec's "split"): the test split, or val when tuning.
SPLITS: tuple[str, ...] = ("test", "val")


#: Options every dataset takes; `load_dataset` applies them after `Dataset.load()`, in this order:
#: subset, the val split (val_fraction, val_seed) or transductive, standardize, pca, knn.
#: `label` only names the dataset in reports.
COMMON_OPTIONS: dict[str, Any] = {
    "subset": None,
    "subset_seed": 0,
    "val_fraction": 0.1,
    "val_seed": 0,
    "transductive": False,
    "standardize": False,
    "pca": None,
    "knn": None,
    "knn_metric": "cosine",
    "label": None,
}

#: Their types and ranges, checked when a suite is loaded (run/suite/spec_check.py). A subset caps rows:
#: beyond 2**31 it can only be a slip (1e12 is not a row count any data set here reaches).
COMMON_OPTION_TYPES: dict[str, Any] = {
    "subset": Annotated[int, Field(ge=1, le=2**31 - 1)] | None,
    "subset_seed": Annotated[int, Field(ge=0)],
    "val_fraction": Annotated[float, Field(ge=0.0, lt=1.0)],
    "val_seed": Annotated[int, Field(ge=0)],
    "transductive": bool,
    "standardize": bool,
    "pca": Annotated[int, Field(ge=1)] | None,
    "knn": Annotated[int, Field(ge=1)] | None,
    "knn_metric": Literal["cosine", "euclidean"],
    "label": str | None,
}

#: Protocol 2's split settings at their defaults (a row's protocol version says when one differs).
DEFAULT_SPLITS: dict[str, Any] = {
    "val_fraction": COMMON_OPTIONS["val_fraction"],
    "val_seed": COMMON_OPTIONS["val_seed"],
    "transductive": COMMON_OPTIONS["transductive"],
}


def dataset_label(spec: Mapping[str, Any] | str | None, data_meta: Mapping[str, Any] | None = None) -> str:
    """What a dataset is called in reports: the suite's `label`, else what the data is.

    `spec` is the trial's dataset entry; `data_meta` the loaded `DataSplits.meta` (None or {} when
    the data never loaded). Without a label: the registered name, or for a dataset read from a
    file (a `path` parameter) the file's stem plus 6 hex characters of the raw content hash
    (which also covers the keys or columns read from it); other parameters as `name(k=v, ...)` (a
    downloadable dataset's `path` and `mirror` are left out: they only say where its verified files
    came from); then a suffix per content-changing option: `subset2000` (`subset2000s1` with subset_seed 1),
    `std`, `pca50`, joined with "-". Data that names itself (meta `report_label`, a feature cache's
    label from its manifest) uses that name in place of the file's.
    """
    entry: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec or {})
    if entry.get("label"):
        return str(entry["label"])
    meta = data_meta or {}
    params = {k: v for k, v in entry.items() if k != "name" and k not in COMMON_OPTIONS}
    if ("path" in params or "mirror" in params) and _downloadable(entry.get("name")):
        # Where a checksum-verified copy was read from does not change what it holds.
        params.pop("path", None)
        params.pop("mirror", None)
    path = params.pop("path", None)
    if meta.get("report_label"):  # the data names itself (a feature cache: imagenet1k-dinov2-vitb14)
        base = str(meta["report_label"])
    elif path is not None:
        base = PurePath(str(path)).stem or str(entry.get("name"))
        digest = meta.get("raw_content_hash")
        # The content hash says which keys or columns were read; without it (the file never
        # loaded) the parameters have to.
        base = f"{base}-{str(digest)[:6]}" if digest else base + _params_text(params)
    else:
        base = str(entry.get("name") or "dataset") + _params_text(params)
    parts = [base]
    if entry.get("subset") is not None:
        seed = int(entry.get("subset_seed") or 0)
        parts.append(f"subset{int(entry['subset'])}" + (f"s{seed}" if seed else ""))
    if entry.get("standardize"):
        parts.append("std")
    if entry.get("pca") is not None:
        parts.append(f"pca{int(entry['pca'])}")
    return "-".join(parts)


def _downloadable(name: Any) -> bool:
    from icon_bench.data.catalog import CATALOG

    return isinstance(name, str) and name in CATALOG


def _params_text(params: Mapping[str, Any]) -> str:
    if not params:
        return ""
    shown = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items()))
    return f"({shown})"
