"""Plan-time checks that read data file headers: sizes, keys, pca, classes; and each cell's memory and work.

Run by run/plan_check.check_plan (`icon-bench run`, `--dry-run` included): a relative path means
something only against the folder the run resolves it from. Only headers are read (and, for one
class, the labels array, whose size the header check bounded first), so a deflate-bomb .npz or a
forged header is refused before any of it is inflated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icon_bench.errors import DataError
from icon_bench.run.suite.load_checks import dataset_entries
from icon_bench.run.suite.memory import MAX_ROW_PASSES, estimate_trial, format_bytes, row_passes
from icon_bench.run.suite.model import Suite, _axis_target, resolve_dataset_paths
from icon_bench.run.suite.yaml_lines import Loc

__all__ = ["DataShape", "check_cells_memory", "check_data_files"]

#: Distinct cells whose memory is estimated at plan time (the rest are like them or checked as they run).
MAX_ESTIMATED = 200
#: Keys of a cell that set how much memory a trial takes, blamed in that order.
_MEMORY_KEYS = ("heads", "head_dim", "batch_size")

DataShape = tuple[int, tuple[int, ...], int | None]  # rows (train + test), per-row shape, classes (None: unknown)
Problem = tuple[Loc, str]


def _arrays_params(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's `arrays` parameters with their defaults (what the loader sees)."""
    from icon_bench.hooks.registry import get_registry

    comp = get_registry().get("dataset", spec["name"])
    defaults = {p.name: p.default for p in comp.params if not p.required and p.type != "**"}
    return {**defaults, **spec}


def _file_shape(spec: dict[str, Any], loc: Loc, limit: int, problems: list[Problem]) -> DataShape | None:
    """Headers of a keyed (.npz) or .npy file: the size bound, the keys the loader would read, one class."""
    from icon_bench.data.files import keyed_names
    from icon_bench.data.headers import check_array_bytes

    path = Path(spec["path"])
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy") or not path.is_file():
        return None
    try:
        headers = {h.name: h for h in check_array_bytes(path, limit)}
        if suffix == ".npy":
            (x,) = headers.values()
            return x.rows, tuple(x.shape[1:]), _npy_classes(path, _arrays_params(spec).get("labels"), limit)
        params = _arrays_params(spec)
        test_path = params.get("test_path")
        test_headers = None
        if isinstance(test_path, str) and test_path.lower().endswith(".npz") and os.path.isfile(test_path):
            test_headers = {h.name: h for h in check_array_bytes(test_path, limit)}
        keys = keyed_names(params, path, list(headers), list(test_headers) if test_headers is not None else None)
    except DataError as exc:
        problems.append(((*loc, "path"), str(exc)))
        return None
    x = headers[keys["features"]]
    rows = x.rows + (((test_headers or headers)[keys["test_features"]].rows) if "test_features" in keys else 0)
    classes = _classes(path, keys["labels"], loc, problems)
    return rows, tuple(x.shape[1:]), classes


def _features_shape(folder: Path) -> DataShape | None:
    """A feature cache's rows (train and its scored split), per-row shape and classes, from its array
    headers and manifest (nothing read beyond them); None when the folder is not one (yet): loading
    it says why."""
    import numpy as np

    from icon_bench.features.cache import read_manifest

    try:
        manifest = read_manifest(folder)
        train = np.load(folder / "features_train.npy", mmap_mode="r")
        scored = folder / "features_test.npy"
        scored = scored if scored.is_file() else folder / "features_val.npy"
        rows = train.shape[0] + (np.load(scored, mmap_mode="r").shape[0] if scored.is_file() else 0)
        classes = manifest.get("num_classes")
    except Exception:
        return None
    return rows, tuple(train.shape[1:]), int(classes) if isinstance(classes, int) else None


def _npy_classes(path: Path, labels: str | None, limit: int) -> int | None:
    """Distinct labels of a .npy file's labels file (the one the loader would read), None when it cannot tell."""
    import numpy as np

    from icon_bench.data.files import ArraysDataset
    from icon_bench.data.headers import check_array_bytes

    try:
        label_path = ArraysDataset._sibling_labels(path, labels)
        check_array_bytes(label_path, limit)  # bounded before it is read
        return len(np.unique(np.load(label_path, mmap_mode="r", allow_pickle=False)))
    except Exception:  # the loader reports a missing or malformed labels file with its own message
        return None


def _classes(path: Path, key: str, loc: Loc, problems: list[Problem]) -> int | None:
    """Distinct labels of the train labels array (its size was bounded by the header check)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            values = np.unique(z[key])
    except Exception:  # the loader reports a malformed array with its own message
        return None
    if len(values) == 1:
        problems.append(((*loc, "path"), f"{path}: every label in {key!r} is {values[0]} (one class: every "
                         "clustering scores 1.000); a benchmark needs two classes or more"))
    return len(values)


def check_data_files(suite: Suite, base: str | os.PathLike[str] | None, limit: int) -> tuple[list[Problem], dict[str, DataShape]]:
    """Problems of the suite's data files (found ones only; a missing file is reported by check_plan) and their
    shapes: `arrays` files' and feature caches' (what the memory estimate of each cell reads)."""
    from icon_bench.run.suite.ids import canonical_json

    problems: list[Problem] = []
    shapes: dict[str, DataShape] = {}
    for loc, spec in dataset_entries(suite):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("path"), str) or spec.get("name") not in ("arrays", "features"):
            continue
        resolved = resolve_dataset_paths(spec, base)
        if spec["name"] == "features":
            shape = _features_shape(Path(resolved["path"]).expanduser())
            if shape is not None:
                shapes[canonical_json(dict(spec))] = shape
            continue
        shape = _file_shape(resolved, loc, limit, problems)
        if shape is None:
            continue
        shapes[canonical_json(dict(spec))] = shape
        features = math.prod(shape[1])
        pca = spec.get("pca")
        if isinstance(pca, int) and not isinstance(pca, bool) and pca > min(features, shape[0]):
            problems.append(((*loc, "pca"), f"pca: {pca} components, but the file has {features} features per row "
                             f"and {shape[0]} rows; at most {min(features, shape[0])}"))
    return problems, shapes


def _blame(suite: Suite, origin: int | None, cell: Mapping[str, Any]) -> Loc:
    """Where a cell's memory is set: a model.X key, heads/head_dim/batch_size, else the method."""
    base: Loc = ("grid",) if origin is None else ("include", origin)
    keys = [k for k in cell if _axis_target(k)[0] == "model"] + [k for k in _MEMORY_KEYS if k in cell]
    if keys:
        return (*base, keys[0])
    for key in _MEMORY_KEYS:
        if key in suite.settings:
            return ("settings", key)
    return (*base, "method")


def check_cells_memory(suite: Suite, shapes: Mapping[str, DataShape], limit: int) -> list[Problem]:
    """Each distinct cell's estimated memory against `limit`, and its epochs x rows against MAX_ROW_PASSES."""
    from icon_bench.run.suite.ids import canonical_json

    problems: list[Problem] = []
    seen: set[str] = set()
    for origin, cell in suite.iter_cells(one_seed=True):
        spec = suite.cell_to_spec(cell)
        key = canonical_json({k: v for k, v in spec.items() if k != "seed"})
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > MAX_ESTIMATED:
            break
        written = cell.get("dataset")
        shape = shapes.get(canonical_json(dict(written))) if isinstance(written, Mapping) else None
        rows, in_shape, classes = shape if shape is not None else (None, None, None)
        estimate = estimate_trial(spec, rows=rows, in_shape=in_shape, num_classes=classes)
        if estimate.total > limit:
            problems.append((_blame(suite, origin, cell), f"a trial of method {spec['method']!r} needs about "
                             f"{format_bytes(estimate.total)} ({estimate.describe()}), more than the "
                             f"{format_bytes(limit)} allowed; make it smaller or pass --max-memory "
                             f"{math.ceil(estimate.total / 2**30)}G"))
            continue
        passes = row_passes(spec, rows)
        if passes is not None and passes > MAX_ROW_PASSES:
            where = ("settings", "epochs") if "epochs" in suite.settings and "epochs" not in cell else (
                ("grid",) if origin is None else ("include", origin)) + ("epochs",)
            problems.append((where, f"epochs x rows = {passes:.3g} row passes per trial, over "
                             f"the limit of {MAX_ROW_PASSES:.0e}; lower epochs or take a subset"))
    return problems
