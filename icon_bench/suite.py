"""Suite files: YAML loading with line numbers, pydantic validation, and grid expansion into trial specs."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from icon_bench.errors import SuiteError, UnknownNameError, did_you_mean

__all__ = [
    "AXES",
    "Resources",
    "Suite",
    "canonical_json",
    "config_id",
    "load_suite",
    "normalize_spec",
    "parse_suite",
    "resolve_dataset_paths",
    "trial_id",
]

#: Grid axes with a meaning of their own; any other plain key is a trainer setting.
AXES: tuple[str, ...] = ("method", "divergence", "dataset", "seed")
#: Dotted prefixes: "p.debias" overrides the p kernel, "dataset.pca" a dataset option, and so on.
DOTTED: tuple[str, ...] = ("p", "q", "model", "settings", "dataset")
#: Where the product puts each axis; fixed so that reordering axes in the YAML changes nothing.
_AXIS_ORDER = {"dataset": 0, "method": 1, "divergence": 2, "seed": 9}

Loc = tuple[Any, ...]


# ---------------------------------------------------------------------------------------------
# Trial ids (the contract in docs/architecture.md; trial.py re-exports these)
# ---------------------------------------------------------------------------------------------
def normalize_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The full, normalised form of a trial spec: every key present, names in one spelling."""
    unknown = set(spec) - {"method", "dataset", "divergence", "seed", "p", "q", "model", "settings", "evaluate"}
    if unknown:
        raise SuiteError(f"trial spec has unknown key(s) {sorted(unknown)}")
    dataset = spec.get("dataset")
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    divergence = spec.get("divergence")
    if isinstance(divergence, Mapping) and set(divergence) == {"name"}:
        divergence = divergence["name"]  # {"name": "kl"} and "kl" are the same trial
    evaluate = spec.get("evaluate")
    return {
        "method": spec.get("method"),
        "dataset": dict(dataset) if dataset is not None else None,
        "divergence": copy.deepcopy(divergence),
        "seed": int(spec.get("seed", 0) or 0),
        "p": dict(spec.get("p") or {}),
        "q": dict(spec.get("q") or {}),
        "model": dict(spec.get("model") or {}),
        "settings": dict(spec.get("settings") or {}),
        "evaluate": list(evaluate) if evaluate is not None else None,
    }


def _canon(value: Any) -> Any:
    # 1.0 and 1 must hash alike (YAML and Python write them either way); tuples are lists in JSON.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _canon(value.item())
    raise TypeError(f"trial spec value {value!r} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, integral floats written as integers."""
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def trial_id(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the normalised spec, 16 hex characters; key order does not matter."""
    return hashlib.sha256(canonical_json(normalize_spec(spec)).encode()).hexdigest()[:16]


def config_id(spec: Mapping[str, Any]) -> str:
    """Like :func:`trial_id` but without the seed: the id shared by the repeats of one configuration."""
    norm = normalize_spec(spec)
    norm.pop("seed")
    return hashlib.sha256(canonical_json(norm).encode()).hexdigest()[:16]


_PATH_KEY = re.compile(r"^(path|root|file|dir)$|_(path|root|file|dir)$")


def resolve_dataset_paths(dataset: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A copy of a dataset spec whose relative path options (path, root, *_path, *_dir, *_file) are absolute.

    Suites write paths relative to the directory icon-bench runs from; the spec keeps them as written
    (so trial ids do not depend on where the checkout lives) and the executor resolves them here,
    on the driver, before a worker somewhere else loads the data.
    """
    base = os.fspath(base) if base is not None else os.getcwd()
    out = dict(dataset)
    for key, value in dataset.items():
        if (
            isinstance(value, str)
            and _PATH_KEY.search(str(key))
            and "://" not in value
            and not os.path.isabs(os.path.expanduser(value))
        ):
            out[key] = os.path.normpath(os.path.join(base, value))
        elif isinstance(value, str) and _PATH_KEY.search(str(key)):
            out[key] = os.path.expanduser(value)
    return out


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads YAML 1.2 floats such as ``1e-3``."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # unhashable; SafeConstructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; suites write learning rates that way.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _collect_lines(loader: yaml.SafeLoader, node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else key_node.value
            try:
                sub = (*path, key)
                hash(sub)
            except TypeError:
                continue
            out.setdefault(sub, key_node.start_mark.line + 1)  # the key's line, not its value's
            _collect_lines(loader, value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(loader, item, (*path, i), out)


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        data = loader.construct_document(node)
        lines: dict[Loc, int] = {}
        _collect_lines(loader, node, (), lines)
        return data, lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SuiteError(f"{source}:{line}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}:1: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------
class Resources(BaseModel):
    """What one trial asks of the executor: CPUs and (fractional) GPUs."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, ge=0)
    gpus: float = Field(0.0, ge=0)


class Suite(BaseModel):
    """A validated suite file; :meth:`trials` expands it into trial specs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    datasets: list[str | dict[str, Any]] | None = None
    grid: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    evaluate: list[str] | None = None
    resources: Resources = Field(default_factory=Resources)
    executor: Literal["local", "ray"] = "local"
    results: str | None = None
    seeds: int | list[int] | None = None

    _source: str = PrivateAttr(default="<suite>")
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)

    # -- derived --------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return self._source

    @property
    def results_dir(self) -> Path:
        """Where rows go: ``results`` as written (relative to the current directory) or results/<name>."""
        return Path(self.results or os.path.join("results", self.name))

    def seed_values(self) -> list[int]:
        if "seed" in self.grid:
            return _as_list(self.grid["seed"])
        if isinstance(self.seeds, int):
            return list(range(self.seeds))
        if self.seeds is not None:
            return list(self.seeds)
        return [0]

    def dataset_values(self) -> list[Any]:
        return _as_list(self.grid["dataset"]) if "dataset" in self.grid else list(self.datasets or [])

    def axes(self) -> dict[str, list[Any]]:
        """The grid's axes (dataset and seed included), in the fixed order the product uses."""
        axes = {k: _as_list(v) for k, v in self.grid.items() if k not in ("dataset", "seed")}
        axes["dataset"] = self.dataset_values()
        axes["seed"] = self.seed_values()
        return dict(sorted(axes.items(), key=lambda kv: (_AXIS_ORDER.get(kv[0], 5), kv[0])))

    def cells(self) -> list[dict[str, Any]]:
        """Flat cells (axis -> value): the grid minus the exclude rules, then the include entries."""
        axes = self.axes()
        keys = list(axes)
        cells = [dict(zip(keys, values)) for values in itertools.product(*axes.values())]
        cells = [c for c in cells if not any(_rule_matches(rule, c) for rule in self.exclude)]
        for entry in self.include:
            sub = {k: _as_list(v) for k, v in entry.items()}
            sub.setdefault("dataset", self.dataset_values())
            sub.setdefault("seed", self.seed_values())
            sub = dict(sorted(sub.items(), key=lambda kv: (_AXIS_ORDER.get(kv[0], 5), kv[0])))
            cells.extend(dict(zip(sub, values)) for values in itertools.product(*sub.values()))
        return cells

    def trials(self) -> list[dict[str, Any]]:
        """Trial specs in the contract's form, deterministic, without duplicates (first one kept)."""
        specs: list[dict[str, Any]] = []
        seen: set[str] = set()
        for cell in self.cells():
            spec = self.cell_to_spec(cell)
            tid = trial_id(spec)
            if tid not in seen:
                seen.add(tid)
                specs.append(spec)
        return specs

    def cell_to_spec(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "method": cell.get("method"),
            "dataset": _dataset_dict(cell.get("dataset")),
            "divergence": copy.deepcopy(cell.get("divergence")),
            "seed": int(cell.get("seed", 0)),
            "p": {},
            "q": {},
            "model": {},
            "settings": copy.deepcopy(self.settings),
            "evaluate": list(self.evaluate) if self.evaluate is not None else None,
        }
        for key, value in cell.items():
            if key in AXES:
                continue
            target, rest = _axis_target(key)
            _set_dotted(spec[target], rest, copy.deepcopy(value))
        return normalize_spec(spec)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _dataset_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"name": value} if isinstance(value, str) else copy.deepcopy(dict(value))


def _axis_target(key: str) -> tuple[str, str]:
    """'p.debias' -> ('p', 'debias'); 'epochs' -> ('settings', 'epochs')."""
    if "." in key:
        prefix, rest = key.split(".", 1)
        return prefix, rest
    return "settings", key


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _value_matches(rule_value: Any, cell_value: Any) -> bool:
    candidates = rule_value if isinstance(rule_value, list) else [rule_value]
    for cand in candidates:
        if _canon_or_none(cand) == _canon_or_none(cell_value):
            return True
        # A rule may name a dataset / divergence / kernel by name even when the cell holds a dict.
        if isinstance(cell_value, Mapping) and isinstance(cand, str) and cell_value.get("name") == cand:
            return True
    return False


def _canon_or_none(value: Any) -> Any:
    try:
        return canonical_json(value)
    except TypeError:
        return repr(value)


def _rule_matches(rule: Mapping[str, Any], cell: Mapping[str, Any]) -> bool:
    """A cell is dropped when every key of the rule matches (a list value matches any of its elements)."""
    return all(_value_matches(v, _cell_value(cell, k)) for k, v in rule.items())


def _cell_value(cell: Mapping[str, Any], key: str) -> Any:
    if key in cell:
        return cell[key]
    if key.startswith("settings."):
        return cell.get(key.split(".", 1)[1])
    if "." not in key and f"settings.{key}" in cell:
        return cell[f"settings.{key}"]
    return None


# ---------------------------------------------------------------------------------------------
# Loading and checking
# ---------------------------------------------------------------------------------------------
def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Read and validate a suite file; every error names the file, the line and the key."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"{source}: no such suite file") from None
    except OSError as exc:
        raise SuiteError(f"{source}: cannot read suite file: {exc.strerror}") from None
    return parse_suite(text, source=source)


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    """Validate suite YAML text (``source`` names it in errors)."""
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
    errors.raise_if_any()
    if not suite.trials():
        errors.add(("grid",), "the suite expands to no trials (everything excluded?)")
        errors.raise_if_any()
    return suite


class _Errors:
    """Collects 'file:line: key: message' errors and raises them together as one SuiteError."""

    _FIELDS: dict[Loc, list[str]] = {(): list(Suite.model_fields), ("resources",): list(Resources.model_fields)}

    def __init__(self, source: str, lines: dict[Loc, int]) -> None:
        self.source, self.lines = source, lines
        self.items: dict[tuple[int, str], list[str]] = {}

    def line(self, loc: Loc) -> int:
        while loc not in self.lines and loc:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def add(self, loc: Loc, message: str) -> None:
        key = _format_loc(loc)
        self.items.setdefault((self.line(loc), key), [])
        if message not in self.items[(self.line(loc), key)]:
            self.items[(self.line(loc), key)].append(message)

    def add_pydantic(self, err: Mapping[str, Any]) -> None:
        loc = tuple(err["loc"])
        # Union members show up as extra loc parts ('str', 'dict[str,any]'); keep what the data has.
        known: list[Any] = []
        for part in loc:
            if (*known, part) in self.lines:
                known.append(part)
            else:
                break
        kind = err["type"]
        if kind == "extra_forbidden":
            choices = self._FIELDS.get(tuple(known[:-1]), [])
            self.add(tuple(known), _unknown_key(str(known[-1]), choices))
        elif kind == "missing":
            self.add((*known, loc[len(known)]), "required key is missing")
        else:
            msg = err["msg"][0].lower() + err["msg"][1:]
            self.add(tuple(known), f"{msg} (got {err.get('input')!r})")

    def raise_if_any(self) -> None:
        if self.items:
            lines = [
                f"{self.source}:{line}: {key + ': ' if key else ''}{' or '.join(msgs)}"
                for (line, key), msgs in sorted(self.items.items())
            ]
            raise SuiteError("\n".join(lines))


def _format_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_key(key: str, choices: Iterable[str]) -> str:
    hint = did_you_mean(key, choices)
    return "unknown key" + (f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "")


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
        errors.add(loc, str(exc))


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
    hint = did_you_mean(key, [*AXES, "datasets", "seeds"], cutoff=0.75)
    if hint:
        errors.add(loc, _unknown_key(key, hint))
        return False
    return _check_setting_key(errors, loc, key)


def _known_settings() -> frozenset[str]:
    """Trainer settings and method options, when those modules exist (methods may accept more)."""
    known: set[str] = set()
    try:
        from icon_bench.train.trainer import TrainSettings

        known |= set(TrainSettings.__dataclass_fields__)
    except (ImportError, AttributeError):
        pass
    try:
        from icon_bench.train.recipe import OPTION_KEYS

        known |= set(OPTION_KEYS)
    except (ImportError, AttributeError):
        pass
    return frozenset(known)


def _check_setting_key(errors: _Errors, loc: Loc, key: str) -> bool:
    # Settings are open-ended (baselines take their own parameters), so only a near-miss of a known
    # setting is an error here; the trial reports anything else it does not accept.
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
    elif key == "dataset":
        _check_name(errors, loc, "dataset", value)
    elif key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.add(loc, f"a seed is an integer, got {value!r}")
    elif key in ("p.name", "q.name"):
        _check_name(errors, loc, "kernel", value)
    elif key == "model.name":
        _check_name(errors, loc, "model", value)


def _check_axis(errors: _Errors, loc: Loc, key: str, values: Any) -> None:
    if isinstance(values, list):
        if not values:
            errors.add(loc, "empty list: the grid would have no cells")
        for i, v in enumerate(values):
            _check_value(errors, (*loc, i), key, v)
    else:
        _check_value(errors, loc, key, values)


def _check(suite: Suite, errors: _Errors) -> None:
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
    for i, ds in enumerate(suite.datasets or []):
        _check_value(errors, ("datasets", i), "dataset", ds)
    if not suite.dataset_values():
        errors.add(("datasets",) if suite.datasets is not None else (), "no dataset: add 'datasets' or grid.dataset")
    if "method" not in grid and not suite.include:
        errors.add(("grid",), "no method: add grid.method (or cells with a method under 'include')")
    for i, entry in enumerate(suite.include):
        if "method" not in entry:
            errors.add(("include", i), "an included cell needs a 'method' (only dataset and seed default to the suite's)")
        for key, values in entry.items():
            if _check_axis_key(errors, ("include", i, key), key):
                _check_axis(errors, ("include", i, key), key, values)
    grid_keys = set(suite.axes())
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
    for key in suite.settings:
        if key in AXES:
            errors.add(("settings", key), f"{key!r} is a grid axis, not a trainer setting; move it under grid")
        else:
            _check_setting_key(errors, ("settings", key), key)
