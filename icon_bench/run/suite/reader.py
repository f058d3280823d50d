"""Reading a suite file: YAML -> validated `Suite`, with every error as file:line: key: message.

The checks (grid, include, exclude, settings, the tune block) add to one error collector
(run/suite/errors.py), which gives every message its line and its "did you mean".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from icon_bench.errors import SuiteError, UnknownNameError, did_you_mean
from icon_bench.run.suite.load_checks import check_evaluate, check_tune_space, check_tuned_data, check_unlabelled_data
from icon_bench.run.suite.spec_check import SpecChecker, check_cells
from icon_bench.run.suite.model import AXES, DOTTED, MAX_CELLS, Suite
from icon_bench.run.suite.errors import (
    _Errors,
    _known_settings,
    _non_ascii,
)
from icon_bench.run.suite.synonyms import SYNONYMS
from icon_bench.run.suite.tune_block import grid_size, parse_param, space_key_error
from icon_bench.run.suite.yaml_lines import MAX_SUITE_BYTES, Loc, _load_yaml

__all__ = ["ROOT_MARKERS", "load_suite", "parse_suite", "project_root"]

#: Seeds go to torch, numpy and scikit-learn; the last takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

# ---------------------------------------------------------------------------------------------
# Loading and checking
# ---------------------------------------------------------------------------------------------
def load_suite(path: str | os.PathLike[str], *, max_cells: int = MAX_CELLS) -> Suite:
    """Read and validate a suite file; every error names the file, the line and the key."""
    source = os.fspath(path)
    try:
        # A FIFO, a device or a folder is refused before it is opened (reading a FIFO blocks until
        # some other process writes to it; /dev/zero never ends).
        if not stat.S_ISREG(os.stat(source).st_mode):
            raise SuiteError(f"{source}: not a regular file; a suite is a YAML file")
        with open(source, "rb") as fh:
            raw = fh.read(MAX_SUITE_BYTES + 1)  # never more than the bound, whatever the file holds
    except FileNotFoundError:
        raise SuiteError(f"{source}: no such suite file") from None
    except OSError as exc:
        raise SuiteError(f"{source}: cannot read suite file: {exc.strerror}") from None
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteError(f"{source}:1: suite file too large (more than {MAX_SUITE_BYTES} bytes)")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark from a Windows editor is harmless
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start]
        raise SuiteError(f"{source}:{line}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8") from None
    suite = parse_suite(text, source=source, max_cells=max_cells)
    suite._root = project_root(source)
    return suite


#: Files whose folder is a project root: relative paths in a suite below it are relative to it.
ROOT_MARKERS: tuple[str, ...] = ("pyproject.toml", ".git")


def project_root(suite_path: str | os.PathLike[str]) -> Path:
    """The nearest folder at or above the suite file that holds a ROOT_MARKERS entry, else the file's folder.

    A project keeps suites in suites/ and results in results/ beside pyproject.toml; a suite alone in
    a folder keeps its results beside it.
    """
    folder = Path(suite_path).resolve().parent
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return folder


def parse_suite(text: str, source: str = "<suite>", *, max_cells: int = MAX_CELLS) -> Suite:
    """Validate suite YAML text (``source`` names it in errors); refuse grids of more than `max_cells` cells."""
    data, lines = _load_yaml(text, source)
    errors = _Errors(source, lines)
    if data is None:
        errors.add((), "empty suite; expected a mapping with at least 'name' and 'grid'")
        errors.raise_if_any()
    if not isinstance(data, dict):
        errors.add((), f"a suite is a mapping of keys, got {type(data).__name__}")
        errors.raise_if_any()
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            errors.add_pydantic(err)
    errors.raise_if_any()  # outside the except block, so the message is not chained to pydantic's
    suite._source, suite._lines = source, lines
    _check(suite, errors)
    # Counted from the axes' lengths before anything is expanded: a 1e9-cell grid costs nothing here.
    count, product = suite.cell_count()
    if count > max_cells:
        errors.add(
            ("grid",),
            f"{count} cells ({product}), over the limit of {max_cells}; shrink an axis or pass --max-cells {count}",
        )
        errors.raise_if_any()
    if suite.tune is not None and count * suite.tune.budget > max_cells:
        # Every search trial is planned (and a dry run lists them): bounded like the cells.
        errors.add(
            ("tune", "budget"),
            f"{count} cells x budget {suite.tune.budget} = {count * suite.tune.budget} search trials, over the "
            f"limit of {max_cells}; lower the budget or pass --max-cells {count * suite.tune.budget}",
        )
        errors.raise_if_any()
    check_cells(suite, errors)
    errors.raise_if_any()
    if suite.discover is not None:
        if len(suite.dataset_values()) * suite.discover.budget > max_cells:
            errors.add(("discover", "budget"), f"over the limit of {max_cells} search trials; lower the budget or "
                       f"pass --max-cells")
            errors.raise_if_any()
    elif next(suite.iter_cells(), None) is None:
        errors.add(("grid",), "the suite expands to no trials (everything excluded?)")
        errors.raise_if_any()
    return suite


def _registry_names(kind: str) -> Any:
    """The registry, or None when this kind has no components yet (its module is not written)."""
    from icon_bench.hooks.registry import get_registry

    registry = get_registry()
    return registry if registry.names(kind) else None


def _check_name(errors: _Errors, loc: Loc, kind: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    name = value.get("name") if isinstance(value, Mapping) else value
    if isinstance(value, Mapping) and "name" in value:
        loc = (*loc, "name")
    if not isinstance(name, str):
        errors.add(loc, f"expected a {kind} name (or a mapping with 'name'), got {value!r}")
        return
    registry = _registry_names(kind)
    if registry is None:
        return
    try:
        registry.get(kind, name)
    except UnknownNameError as exc:
        errors.add(loc, str(exc) + _non_ascii(name))


def _check_axis_key(errors: _Errors, loc: Loc, key: Any) -> bool:
    """True when `key` is a valid grid / include / exclude key; records an error otherwise."""
    if not isinstance(key, str) or not key:
        errors.add(loc, f"keys must be non-empty strings, got {key!r}")
        return False
    if key in AXES:
        return True
    if "." in key:
        prefix, rest = key.split(".", 1)
        if prefix not in DOTTED:
            hint = did_you_mean(prefix, DOTTED)
            errors.add(
                loc,
                f"unknown prefix {prefix!r} (dotted keys start with {', '.join(DOTTED)})"
                + (f"; did you mean '{hint[0]}.{rest}'?" if hint else ""),
            )
            return False
        if not rest or any(not part for part in rest.split(".")):
            errors.add(loc, "empty part in a dotted key")
            return False
        return _check_setting_key(errors, loc, rest) if prefix == "settings" else True
    # Any other plain key is a trainer setting; one that is a near-miss of an axis is a typo.
    meant = SYNONYMS["grid, include and exclude"].get(key)
    if meant in Suite.model_fields:
        errors.add(loc, f"unknown key; {meant!r} is a top-level key of the suite, not a grid axis")
        return False
    hint = [meant] if meant else did_you_mean(key, [*AXES, "datasets", "seeds"], cutoff=0.75)
    if hint:
        errors.add(loc, f"unknown key; did you mean {' or '.join(repr(h) for h in hint)}?" + _non_ascii(key))
        return False
    return _check_setting_key(errors, loc, key)


def _check_setting_key(errors: _Errors, loc: Loc, key: str) -> bool:
    # Whether a method takes a setting is checked per cell (_check_cells); this catches near-misses
    # for methods that do not declare their settings.
    known = _known_settings()
    if key in known:
        return True
    hint = did_you_mean(key, known, cutoff=0.8)
    if hint:
        errors.add(loc, f"unknown setting; did you mean {' or '.join(repr(h) for h in hint)}?")
        return False
    return True


def _check_value(errors: _Errors, loc: Loc, key: str, value: Any) -> None:
    if key == "method":
        _check_name(errors, loc, "method", value)
    elif key == "divergence":
        _check_name(errors, loc, "divergence", value, allow_none=True)
        for param, message in SpecChecker().divergence(value):
            errors.add((*loc, param) if param else loc, message)
    elif key == "dataset":
        _check_name(errors, loc, "dataset", value)
        for option, message in SpecChecker().dataset(value):
            errors.add((*loc, option) if option else loc, message)
    elif key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.add(loc, f"a seed is an integer, got {value!r}")
        elif not 0 <= value <= MAX_SEED:
            errors.add(loc, f"a seed is in 0..{MAX_SEED} (what numpy and scikit-learn take), got {value}")
    elif key in ("p.name", "q.name"):
        _check_name(errors, loc, "kernel", value)
    elif key == "model.name":
        _check_name(errors, loc, "model", value)


def _check_dataset_entries(suite: Suite, errors: _Errors) -> None:
    """Split options that load_dataset would reject, and one label naming two different datasets."""
    if suite.datasets is not None:
        entries = [(("datasets", i), ds) for i, ds in enumerate(suite.datasets)]
    else:
        values = suite.grid.get("dataset")
        values = values if isinstance(values, list) else [values]
        entries = [(("grid", "dataset", i), ds) for i, ds in enumerate(values)]
    seen: dict[str, tuple[Loc, Any]] = {}
    for loc, ds in entries:
        if not isinstance(ds, Mapping):
            continue
        fraction = ds.get("val_fraction", 0.1)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            errors.add((*loc, "val_fraction"), f"val_fraction must be a number in [0, 1), got {fraction!r}")
        if not isinstance(ds.get("transductive", False), bool):
            errors.add((*loc, "transductive"), f"transductive must be true or false, got {ds['transductive']!r}")
        elif ds.get("transductive") and ds.get("val_fraction"):
            errors.add((*loc, "val_fraction"), "transductive fits and scores on all rows, so it has no val split")
        label = ds.get("label")
        if label is None:
            continue
        if not isinstance(label, str) or not label.strip():
            errors.add((*loc, "label"), f"a label is a non-empty string, got {label!r}")
        elif label in seen and dict(seen[label][1]) != dict(ds):
            first = errors.line((*seen[label][0], "label"))
            errors.add((*loc, "label"), f"label {label!r} already names another dataset (line {first}); "
                       "two datasets would share one leaderboard")
        else:
            seen.setdefault(label, (loc, ds))


def _check_axis(errors: _Errors, loc: Loc, key: str, values: Any) -> None:
    if isinstance(values, list):
        if not values:
            errors.add(loc, "empty list: the grid would have no cells")
        for i, v in enumerate(values):
            _check_value(errors, (*loc, i), key, v)
    else:
        _check_value(errors, loc, key, values)


def _check(suite: Suite, errors: _Errors) -> None:
    """Keys and names, each where it is written (values per cell: spec_check.check_cells)."""
    grid = suite.grid
    for key, values in grid.items():
        if _check_axis_key(errors, ("grid", key), key):
            _check_axis(errors, ("grid", key), key, values)
    if suite.datasets is not None and "dataset" in grid:
        errors.add(("grid", "dataset"), "give datasets either at the top level or as grid.dataset, not both")
    if suite.seeds is not None and "seed" in grid:
        errors.add(("seeds",), "give seeds either at the top level or as grid.seed, not both")
    if isinstance(suite.seeds, int) and suite.seeds < 1:
        errors.add(("seeds",), f"seeds: N means seeds 0..N-1; N must be at least 1, got {suite.seeds}")
    for i, seed in enumerate(suite.seeds if isinstance(suite.seeds, list) else []):
        _check_value(errors, ("seeds", i), "seed", seed)
    for i, ds in enumerate(suite.datasets or []):
        _check_value(errors, ("datasets", i), "dataset", ds)
    _check_dataset_entries(suite, errors)
    if not suite.dataset_values():
        errors.add(("datasets",) if suite.datasets is not None else (), "no dataset: add 'datasets' or grid.dataset")
    if suite.discover is not None:
        from icon_bench.run.suite.discover_check import check_discover

        check_discover(suite, errors)
    elif "method" not in grid and not suite.include:
        errors.add(("grid",), "no method: add grid.method (or cells with a method under 'include')")
    for key in grid if "method" not in grid else ():
        if key not in ("dataset", "seed"):  # those two are the include entries' defaults
            errors.add(
                ("grid", key),
                "the grid has no method axis, so it makes no cells of its own; add grid.method "
                "or move this key into the include entries",
            )
    for i, entry in enumerate(suite.include):
        if "method" not in entry:
            errors.add(("include", i), "an included cell needs a 'method' (only dataset and seed default to the suite's)")
        for key, values in entry.items():
            if _check_axis_key(errors, ("include", i, key), key):
                _check_axis(errors, ("include", i, key), key, values)
    grid_keys = set(suite.axis_names())
    for i, rule in enumerate(suite.exclude):
        if not rule:
            errors.add(("exclude", i), "an empty exclude rule would drop every cell")
        for key in rule:
            if not _check_axis_key(errors, ("exclude", i, key), key):
                continue
            if key not in grid_keys:
                # A rule on a key the grid does not vary can only ever match by accident.
                hint = did_you_mean(key, grid_keys)
                errors.add(
                    ("exclude", i, key),
                    f"not a grid axis (axes: {', '.join(sorted(grid_keys))})"
                    + (f"; did you mean {hint[0]!r}?" if hint else ""),
                )
    for i, metric in enumerate(suite.evaluate or []):
        _check_name(errors, ("evaluate", i), "metric", metric)
    check_evaluate(suite, errors)
    check_unlabelled_data(suite, errors)
    if suite.tune is not None:
        _check_tune(suite, errors)
        check_tuned_data(suite, errors)
    if suite.track is not None and suite.track.mlflow is not None:
        from icon_bench.extras import available, missing_message

        if not available("mlflow"):
            errors.add(("track", "mlflow"), missing_message("MLflow logging", "mlflow"))
    for key in suite.settings:
        if key in AXES:
            errors.add(("settings", key), f"{key!r} is a grid axis, not a trainer setting; move it under grid")
        else:
            _check_setting_key(errors, ("settings", key), key)


def _check_tune(suite: Suite, errors: _Errors) -> None:
    """The tune block: each space key a tunable spec key with a valid domain, the metric, a grid's budget."""
    tune = suite.tune
    assert tune is not None
    if not tune.space:
        errors.add(("tune", "space"), "an empty search space: name at least one hyperparameter to tune")
    grid_keys = set(suite.grid) | {k for entry in suite.include for k in entry}
    params = []
    for key, value in tune.space.items():
        loc = ("tune", "space", key)
        if not _check_axis_key(errors, loc, key):
            continue
        why = space_key_error(key)
        if why is None and key in grid_keys:
            why = "is also a grid axis; a hyperparameter is either searched (tune.space) or set per cell (grid)"
        if why is not None:
            errors.add(loc, why)
            continue
        try:
            params.append(parse_param(key, value))
        except ValueError as exc:
            errors.add(loc, str(exc))
    check_tune_space(suite, errors, params)
    if tune.algorithm == "grid" and len(params) == len(tune.space):
        size = grid_size(params)
        if size is None:
            errors.add(("tune", "algorithm"), "grid search takes lists of values only; use random for ranges")
        elif size != tune.budget:
            errors.add(("tune", "budget"), f"a grid over this space has {size} points; set budget: {size}")
    elif tune.algorithm == "random" and params and len(params) == len(tune.space):
        size = grid_size(params)
        if size is not None and tune.budget > size:
            # Drawn without replacement: more trials than points would run one candidate twice.
            errors.add(("tune", "budget"), f"this space of lists has {size} points, fewer than the budget; "
                       f"set budget: {size} (every point once) or add values")
    if tune.algorithm == "tpe":
        from icon_bench.extras import available, missing_message

        if not available("optuna"):
            errors.add(("tune", "algorithm"), missing_message("tpe", "optuna") + " (or use random)")
        for p in params:
            if p.kind == "choice" and not all(v is None or isinstance(v, (bool, int, float, str)) for v in p.values):
                errors.add(("tune", "space", p.key), "tpe takes choices of numbers, strings or booleans only")
    if tune.metric is not None:
        _check_name(errors, ("tune", "metric"), "metric", tune.metric)
        if suite.evaluate is not None and tune.metric not in suite.evaluate:
            errors.add(("tune", "metric"), f"{tune.metric!r} is not among the suite's evaluate metrics, so no trial reports it")
