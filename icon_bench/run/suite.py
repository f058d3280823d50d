"""The `Suite` model (pydantic) and its grid expansion into trial specs; dataset path resolution."""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from icon_bench.run.ids import canonical_json, normalize_spec, trial_id
from icon_bench.run.yaml_lines import Loc

__all__ = ["AXES", "Resources", "Suite", "resolve_dataset_paths"]


#: Grid axes with a meaning of their own; any other plain key is a trainer setting.
AXES: tuple[str, ...] = ("method", "divergence", "dataset", "seed")
#: Dotted prefixes: "p.debias" overrides the p kernel, "dataset.pca" a dataset option, and so on.
DOTTED: tuple[str, ...] = ("p", "q", "model", "settings", "dataset")
#: Where the product puts each axis; fixed so that reordering axes in the YAML changes nothing.
_AXIS_ORDER = {"dataset": 0, "method": 1, "divergence": 2, "seed": 9}


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
