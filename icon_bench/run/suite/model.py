"""The `Suite` model (pydantic) and its grid expansion into trial specs; dataset path resolution."""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from icon_bench.run.suite.ids import canonical_json, normalize_spec, trial_id
from icon_bench.run.suite.limits import DEFAULT_TIMEOUT, MAX_CELLS
from icon_bench.run.suite.tracking import Track
from icon_bench.run.suite.discover_block import Discover
from icon_bench.run.suite.tune_block import NumbersNotBooleans, Tune
from icon_bench.run.suite.yaml_lines import Loc

__all__ = ["AXES", "MAX_CELLS", "Resources", "Suite", "resolve_dataset_paths"]


#: Grid axes with a meaning of their own; any other plain key is a trainer setting.
AXES: tuple[str, ...] = ("method", "divergence", "dataset", "seed")
#: Dotted prefixes: "p.debias" overrides the p kernel, "dataset.pca" a dataset option, and so on.
DOTTED: tuple[str, ...] = ("p", "q", "model", "settings", "dataset")
#: Where the product puts each axis; fixed so that reordering axes in the YAML changes nothing.
_AXIS_ORDER = {"dataset": 0, "method": 1, "divergence": 2, "seed": 9}


_PATH_KEY = re.compile(r"^(path|root|file|dir)$|_(path|root|file|dir)$")


def resolve_dataset_paths(dataset: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A copy of a dataset spec whose relative path options (path, root, *_path, *_dir, *_file) are absolute.

    Suites write paths relative to their project root (:attr:`Suite.root`); the spec keeps them as
    written (so trial ids do not depend on where the checkout lives) and the executor resolves them
    here, on the driver, before a worker somewhere else loads the data.
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
# Schema (docs/suite.md is generated from these fields: run/suite/doc.py)
# ---------------------------------------------------------------------------------------------
# MAX_CELLS (run/suite/limits.py, re-exported here) bounds the cells a suite may expand to.


class Resources(NumbersNotBooleans):
    """What one trial asks of the executor: CPUs and (fractional) GPUs."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="CPUs per trial (also its torch threads)", examples=[2]
    )
    gpus: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="GPUs per trial: a fraction up to 1 (0.25 runs four trials per GPU) or a whole number",
        examples=[0.25],
    )

    @field_validator("gpus")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        # Ray's rule: a task shares one GPU (a fraction) or owns whole ones; 2.5 GPUs fit no scheduler.
        if value > 1 and not float(value).is_integer():
            raise ValueError("gpus above 1 must be a whole number")
        return value


class Suite(NumbersNotBooleans):
    """A validated suite file; :meth:`trials` expands it into trial specs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the suite's name: results/<name> (its report in results/<name>/report); letters, digits, _ . -",
        examples=["clustering"],
    )
    description: str | None = Field(None, description="one line for reports", examples=["digits under KL and TV"])
    datasets: list[str | dict[str, Any]] | None = Field(
        None,
        description="datasets every grid cell runs on: names, or mappings with `name` and options",
        examples=[["digits", {"name": "arrays", "path": "data/x.npz", "pca": 50}]],
    )
    grid: dict[str, Any] = Field(
        default_factory=dict,
        description="axes (a value or a list each) whose product gives the cells; see Grid keys",
        examples=[{"method": ["pmi", "kmeans"], "divergence": ["kl", "tv"], "p.debias": [0.0, 0.6]}],
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="trainer settings and method options shared by every cell; see Settings",
        examples=[{"epochs": 30, "lr": 1.0e-3}],
    )
    include: list[dict[str, Any]] = Field(
        default_factory=list,
        description="extra cells, each a mapping of grid keys with a `method`; dataset and seed default to the suite's",
        examples=[[{"method": "tsne", "epochs": 100}]],
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        description="rules dropping grid cells: a cell goes when every key matches (a list matches any element)",
        examples=[[{"method": "kmeans", "divergence": ["tv", "js"]}]],
    )
    evaluate: list[str] | None = Field(
        None, description="metrics of every cell; null: each method's own", examples=[["hungarian", "nmi", "ari"]]
    )
    resources: Resources = Field(default_factory=Resources, description="per trial; see Resources")
    executor: Literal["local", "ray"] = Field(
        "local", description="`local` (one trial after another) or `ray`; `--executor` overrides", examples=["ray"]
    )
    results: str | None = Field(
        None,
        description=(
            "results folder, relative to the suite's project root (the nearest folder above the suite file "
            "holding pyproject.toml or .git, else the file's own; dataset paths are relative to it too); "
            "null: results/<name> there; `--results` overrides"
        ),
        examples=["results/mine"],
    )
    seeds: int | list[int] | None = Field(
        None,
        description="seeds of every cell: N means 0..N-1, or a list; null: grid.seed, else [0]",
        examples=[3],
    )
    fail_on_warnings: bool = Field(
        False,
        description="store a trial whose loss diverged or whose output collapsed (one cluster) as failed, "
        "not as ok with `warnings`",
        examples=[True],
    )
    timeout: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description=f"seconds a trial may run before it is stopped and stored as failed with status timeout "
        f"(the sweep goes on); null: {DEFAULT_TIMEOUT} (a day); `--timeout` overrides",
        examples=[3600],
    )
    tune: Tune | None = Field(
        None,
        description="search each cell's hyperparameters with the same budget on val, then score the selection "
        "once on test; see Tuning in docs/architecture.md. null: every cell at its defaults",
        examples=[{"budget": 8, "space": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}}],
    )
    discover: Discover | None = Field(
        None,
        description="search the space of losses (p, q, divergence, their parameters) for one task with the same "
        "budget per dataset on val, then confirm the best on test at fresh seeds; see Discover",
        examples=[{"task": "clustering", "budget": 30, "confirm": {"top": 3, "seeds": 5}}],
    )
    track: Track | None = Field(
        None,
        description="log every trial to an experiment tracker while the suite runs; see Track. null: rows only",
        examples=[{"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}],
    )

    _source: str = PrivateAttr(default="<suite>")
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _root: Path | None = PrivateAttr(default=None)

    # -- derived --------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return self._source

    @property
    def root(self) -> Path:
        """What relative paths in the suite (``results``, dataset paths) are relative to.

        The nearest folder at or above the suite file holding ``pyproject.toml`` or ``.git`` (else the
        suite file's folder), so a suite means the same files from whatever folder it is run; the
        current directory for a suite given as text.
        """
        return self._root if self._root is not None else Path.cwd()

    @property
    def results_dir(self) -> Path:
        """Where rows go: ``results`` as written, or results/<name>, under :attr:`root`.

        Relative (to the current directory) only for a suite given as text.
        """
        rel = Path(self.results or os.path.join("results", self.name)).expanduser()
        return rel if self._root is None else self._root / rel

    def _seeds(self) -> Sequence[int]:
        # A range, not a list: `seeds: 1000000000` is counted (and refused) without being built.
        if "seed" in self.grid:
            return _as_list(self.grid["seed"])
        if isinstance(self.seeds, int):
            return range(self.seeds)
        if self.seeds is not None:
            return list(self.seeds)
        return [0]

    def seed_values(self) -> list[int]:
        return list(self._seeds())

    def dataset_values(self) -> list[Any]:
        return _as_list(self.grid["dataset"]) if "dataset" in self.grid else list(self.datasets or [])

    def axis_names(self) -> list[str]:
        """The grid's axes (dataset and seed included), in the fixed order the product uses."""
        return sorted({*self.grid, "dataset", "seed"}, key=lambda k: (_AXIS_ORDER.get(k, 5), k))

    def axes(self) -> dict[str, list[Any]]:
        """The grid's axes (dataset and seed included) with their values, in the product's order."""
        return {k: list(v) for k, v in self._blocks()[0][1].items()}

    def _blocks(self) -> list[tuple[int | None, dict[str, Sequence[Any]]]]:
        """The grid (origin None) and each include entry (origin: its index) as axes whose product is its cells."""
        grid = {k: _as_list(v) for k, v in self.grid.items() if k not in ("dataset", "seed")}
        grid.update(dataset=self.dataset_values(), seed=self._seeds())
        blocks: list[tuple[int | None, dict[str, Sequence[Any]]]] = [(None, _ordered(grid))]
        for i, entry in enumerate(self.include):
            sub: dict[str, Sequence[Any]] = {k: _as_list(v) for k, v in entry.items()}
            sub.setdefault("dataset", self.dataset_values())
            sub.setdefault("seed", self._seeds())
            blocks.append((i, _ordered(sub)))
        return blocks

    def _grid_has_cells(self) -> bool:
        # Without a method axis the grid only gives the include entries their datasets and seeds:
        # its own cells would name no method.
        return "method" in self.grid

    def cell_count(self) -> tuple[int, str]:
        """Cells before exclude rules, from the axes' lengths alone (nothing expanded), and how they multiply."""
        total, parts = 0, []
        for origin, axes in self._blocks():
            if origin is None and not self._grid_has_cells():
                continue
            count = math.prod(len(v) for v in axes.values())
            total += count
            if origin is None:
                parts.append(" x ".join(f"{k} {len(v)}" for k, v in axes.items()))
            elif count:
                parts.append(f"include[{origin}] {count}")
        return total, " + ".join(parts)

    def iter_cells(self, one_seed: bool = False) -> Iterator[tuple[int | None, dict[str, Any]]]:
        """(origin, cell) lazily: the grid's cells minus the exclude rules (origin None), then each include's.

        The last axis (the seeds) is walked, not copied as itertools.product would: a range of a
        billion seeds costs nothing until its cells are asked for. ``one_seed``: only each block's
        first seed (what load-time checks need: a seed changes no setting).
        """
        for origin, axes in self._blocks():
            if origin is None and not self._grid_has_cells():
                continue
            *keys, last = list(axes)
            values = list(axes.values())
            lasts = values[-1][:1] if one_seed else values[-1]
            for head in itertools.product(*values[:-1]):
                for value in lasts:
                    cell = dict(zip(keys, head))
                    cell[last] = value
                    if origin is None and any(_rule_matches(rule, cell) for rule in self.exclude):
                        continue
                    yield origin, cell

    def cells(self) -> list[dict[str, Any]]:
        """Flat cells (axis -> value): the grid minus the exclude rules, then the include entries."""
        return [cell for _, cell in self.iter_cells()]

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


def _ordered(axes: dict[str, Sequence[Any]]) -> dict[str, Sequence[Any]]:
    return dict(sorted(axes.items(), key=lambda kv: (_AXIS_ORDER.get(kv[0], 5), kv[0])))


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
