"""Checking a trial spec's settings and component parameters against what the components declare, without data.

A suite is checked with this when it is loaded (run/suite/reader.py), so a wrong key or value is one
file:line: key error before anything runs, not the same TypeError in every cell. What is declared:
a learned method's trainer settings and options (train/trainer.py, train/recipe.py) and a
baseline's parameters (types with ranges); a kernel's, model's, divergence's and dataset's
parameters (their factory signatures); the common dataset options (data/load.py). Kernels and
divergences are also built once from the merged parameters, which runs their own range checks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from icon_bench.errors import IconBenchError, did_you_mean, invalid_value
from icon_bench.hooks.registry import Component, get_registry, split_spec
from icon_bench.run.suite.model import AXES, MAX_CELLS, Suite, _axis_target
from icon_bench.run.suite.synonyms import SETTING_SYNONYMS
from icon_bench.run.suite.yaml_lines import Loc

__all__ = ["KEY_ONLY", "Problems", "SpecChecker", "check_cells", "check_type"]

#: Model parameters the recipe supplies itself (from the data), never a spec.
_MODEL_SUPPLIED = ("in_shape", "out_dim")
#: Where a key not known to a component is explained.
_SEE = "see docs/suite.md"
def _hint(key: str, choices: list[str], most: int = 12) -> str:
    hint = did_you_mean(key, choices, cutoff=0.75)
    if hint:
        return f"did you mean {' or '.join(repr(h) for h in hint)}?"
    return f"known: {', '.join(sorted(choices))}" if len(choices) <= most else _SEE


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("$")
    if isinstance(value, Mapping):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_placeholder(v) for v in value)
    return False


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(annotation)
    except Exception:  # a type pydantic cannot check (a Tensor): nothing declared to check against
        return None


#: Passed as the value to a check: only whether the key is known is checked.
KEY_ONLY: Any = object()


def check_type(annotation: Any, value: Any) -> str | None:
    """None when `value` fits `annotation` (pydantic's lax mode, ranges included), else why not."""
    if value is KEY_ONLY or annotation is Any or annotation is inspect.Parameter.empty:
        return None
    try:
        adapter = _adapter(annotation)
    except TypeError:  # unhashable annotation objects cannot be cached; build one
        adapter = TypeAdapter(annotation)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return invalid_value(exc.errors()[0])
    if isinstance(value, (bool, float)):
        # Lax mode reads true as 1 and 500.0 as 500, but a trial gets the value as written: say it here.
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            got = f"the boolean {str(value).lower()}" if isinstance(value, bool) else f"{value!r} (write {int(value)})"
            return f"expected {'a number' if isinstance(value, bool) else 'an integer'}, got {got}"
    return None


def _annotations(component: Component) -> dict[str, Any]:
    """Parameter name -> annotation of a component's factory (Any where it cannot be resolved)."""
    try:
        sig = inspect.signature(component.factory, eval_str=True)
    except Exception:  # a forward reference that does not resolve: fall back to names only
        try:
            sig = inspect.signature(component.factory)
        except (TypeError, ValueError):
            return {}
        return {name: Any for name in sig.parameters}
    return {name: p.annotation for name, p in sig.parameters.items()}


class SpecChecker:
    """Checks spec fragments (method settings, p/q/model/dataset parameters) against the registry; cached."""

    def __init__(self) -> None:
        self.registry = get_registry()
        self._recipes: dict[str, Any] = {}
        self._types: dict[tuple[str, str], dict[str, Any] | None] = {}

    # -- lookups --------------------------------------------------------------------------------
    def component(self, kind: str, name: Any) -> Component | None:
        if not isinstance(name, str):
            return None
        try:
            return self.registry.get(kind, name)
        except IconBenchError:
            return None

    def recipe(self, method: Any) -> Any:
        """The method's recipe at its defaults, or None when it is unknown or cannot be built."""
        if method not in self._recipes:
            comp = self.component("method", method)
            try:
                self._recipes[method] = comp.create() if comp is not None else None
            except Exception:  # a broken plugin method: the trial reports it when it runs
                self._recipes[method] = None
        return self._recipes[method]

    def params(self, kind: str, name: Any) -> dict[str, Any] | None:
        """A component's parameters -> annotation; None when unknown or it takes any keyword."""
        key = (kind, str(name))
        if key not in self._types:
            comp = self.component(kind, name)
            if comp is None or comp.accepts_any:
                self._types[key] = None
            else:
                annotations = _annotations(comp)
                self._types[key] = {p.name: annotations.get(p.name, Any) for p in comp.params}
        return self._types[key]

    # -- checks: each returns None when fine, else a message ------------------------------------
    def setting(self, method: Any, key: str, value: Any, peers: Iterable[str] = ()) -> str | None:
        """A key of ``settings`` for `method`: known to its recipe, and of its type; `peers` are the
        suite's other methods, named when one of them takes the key (k-means's n_init on pmi)."""
        declared = self._settings(method)
        if declared is None:
            return None  # a recipe that does not declare its settings: the trial checks them
        if key not in declared:
            owners = [m for m in peers if m != method and key in (self._settings(m) or ())]
            if owners:
                owned = ", ".join(map(repr, owners))
                return f"a setting of {owned}, not of method {method!r}; set it in an include entry"
            meant = SETTING_SYNONYMS.get(key)
            hint = f"did you mean {meant!r}?" if meant else _hint(key, list(declared))
            return f"not a setting of method {method!r}; {hint}"
        problem = check_type(declared[key], value)
        if problem is None and key == "augment" and isinstance(value, Mapping):
            return _augment_problem(value)
        return problem

    def _settings(self, method: Any) -> dict[str, Any] | None:
        types = getattr(self.recipe(method), "setting_types", None)
        return types() if callable(types) else None

    def kernel_keys(self, method: Any, side: str, name: Any) -> tuple[str, list[str]] | None:
        """(kernel name, keys a spec's p/q may set) for `method`, with p.name/q.name `name` if given."""
        from icon_bench.train.recipe import kernel_keys

        recipe = self.recipe(method)
        base = getattr(recipe, side, None)
        if not isinstance(base, Mapping):
            return None  # a baseline has no kernels: it sets p/q overrides aside
        kernel = name if name is not None else base.get("name")
        same = kernel == base.get("name")
        keys = kernel_keys(side, kernel, base if same else None)
        return (str(kernel), keys) if keys is not None else None

    def kernel_param(self, method: Any, side: str, name: Any, key: str, value: Any) -> str | None:
        from icon_bench.train.recipe import TRANSFORM_TYPES

        found = self.kernel_keys(method, side, name)
        if found is None:
            return None
        kernel, keys = found
        if key not in keys:
            return f"unknown parameter of {side} kernel {kernel!r} (method {method!r}); {_hint(key, keys)}"
        if key in TRANSFORM_TYPES and key != "name":
            return check_type(TRANSFORM_TYPES[key], value)
        declared = self.params("kernel", kernel) or {}
        return check_type(declared.get(key, Any), value)

    def kernel_build(self, method: Any, side: str, overrides: Mapping[str, Any]) -> str | None:
        """Build `method`'s `side` kernel with `overrides` (its own range checks); None when fine or unbuildable."""
        from icon_bench.train.recipe import Method

        recipe = self.recipe(method)
        # Only where the recipe builds its kernels the standard way (dcl reads q's keys itself).
        if not isinstance(recipe, Method) or type(recipe).build_loss is not Method.build_loss:
            return None
        try:
            merged = getattr(recipe.with_overrides({side: dict(overrides)}), side)
        except Exception as exc:  # a key the checks above report already
            return None if isinstance(exc, KeyError) else str(exc)
        if _has_placeholder(merged):
            return None  # "$num_classes" is known only with the data
        name, params = split_spec(merged)
        try:
            self.registry.create("kernel", name, **params)
        except Exception as exc:
            return str(exc) if isinstance(exc, IconBenchError) else f"{type(exc).__name__}: {exc}"
        return None

    def model_param(self, method: Any, name: Any, key: str, value: Any) -> str | None:
        recipe = self.recipe(method)
        base = getattr(recipe, "model", None)
        if not isinstance(base, Mapping):
            return None
        model = name if name is not None else base.get("name")
        # "auto" picks the CNN for images and the MLP for vectors: either one's keys may be meant.
        candidates = ["cnn", "mlp"] if model == "auto" else [model]
        declared: dict[str, list[Any]] = {"name": [Any], "out_dim": [Any]}
        for cand in candidates:
            params = self.params("model", cand)
            if params is None:
                return None
            for k, annotation in params.items():
                if k not in _MODEL_SUPPLIED:
                    declared.setdefault(k, []).append(annotation)
        if key not in declared:
            return f"unknown parameter of model {model!r} (method {method!r}); {_hint(key, sorted(declared))}"
        problems = [check_type(a, value) for a in declared[key]]
        return None if None in problems else problems[0]

    def dataset(self, spec: Any, required: bool = True) -> list[tuple[str | None, str]]:
        """(option or None, message) for every problem of a dataset spec's options (and missing ones)."""
        from icon_bench.data.load import COMMON_OPTION_TYPES

        if not isinstance(spec, Mapping):
            return []
        name = spec.get("name")
        params = self.params("dataset", name)
        declared = {**(params or {}), **COMMON_OPTION_TYPES}
        out: list[tuple[str | None, str]] = []
        for key, value in spec.items():
            if key == "name":
                continue
            if key not in declared:
                if params is not None:
                    out.append((key, f"unknown option of dataset {name!r}; {_hint(str(key), sorted(declared))}"))
                continue
            problem = check_type(declared[key], value)
            if problem:
                out.append((key, problem))
        if params is not None and required:
            missing = [k for k, a in self._required("dataset", name) if k not in spec]
            out.extend((None, f"dataset {name!r} needs {k!r}") for k in missing)
        return out

    def divergence(self, spec: Any) -> list[tuple[str | None, str]]:
        """(parameter or None, message) for a divergence given with parameters ({name: alpha, a: 0.5})."""
        if not isinstance(spec, Mapping) or self.component("divergence", spec.get("name")) is None:
            return []
        name, params = split_spec(spec)
        declared = self.params("divergence", name)
        out: list[tuple[str | None, str]] = []
        for key, value in params.items():
            if declared is not None and key not in declared:
                out.append((key, f"unknown parameter of divergence {name!r}; {_hint(key, sorted(declared))}"))
            elif declared is not None and (problem := check_type(declared[key], value)):
                out.append((key, problem))
        if not out:
            try:
                self.registry.create("divergence", name, **params)
            except Exception as exc:
                out.append((None, str(exc) if isinstance(exc, IconBenchError) else f"{type(exc).__name__}: {exc}"))
        return out

    def _required(self, kind: str, name: Any) -> list[tuple[str, Any]]:
        comp = self.component(kind, name)
        return [(p.name, p.type) for p in (comp.params if comp else ()) if p.required and p.type != "**"]


def _augment_problem(params: Mapping[str, Any]) -> str | None:
    """An `augment:` mapping's keys and values against the Augmenter's parameters and its own range checks."""
    from icon_bench.data.augment import Augmenter

    declared = {name: p.annotation for name, p in inspect.signature(Augmenter, eval_str=True).parameters.items()}
    for key, value in params.items():
        if key not in declared:
            return f"unknown augment parameter {key!r}; {_hint(str(key), sorted(declared))}"
        if problem := check_type(declared[key], value):
            return f"augment.{key}: {problem}"
    try:
        Augmenter(**params)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# A suite's cells
# ---------------------------------------------------------------------------------------------
class Problems(Protocol):
    """Where check_cells reports: suite_file's error collector (file:line: key: message)."""

    def add(self, loc: Loc, message: str) -> None: ...

    def has(self, loc: Loc) -> bool: ...


def _value_loc(suite: Suite, base: Loc, key: str, value: Any) -> Loc:
    """Where a cell's value of `key` is written: the axis, or its list element."""
    block: Any = suite.grid if base == ("grid",) else suite.include[base[1]]
    written = block.get(key)
    if isinstance(written, list):
        for i, item in enumerate(written):
            if item is value or item == value:
                return (*base, key, i)
    return (*base, key)


def check_cells(suite: Suite, errors: Problems) -> None:
    """Each cell's settings and p/q/model/dataset parameters against its method's declared ones.

    Per cell, because what a key means depends on the cell's method (n_init is k-means's, epochs a
    learned method's) and kernel; each (method, key, value) is checked once. Bounded: at most
    MAX_CELLS cells are walked, one seed each, whatever limit the run raised (parse_suite counted).
    """
    checker = SpecChecker()
    peers = sorted({m for v in [suite.grid.get("method"), *(e.get("method") for e in suite.include)]
                    for m in (v if isinstance(v, list) else [v]) if isinstance(m, str)})
    methods: set[str] = set()
    seen: set[tuple[Any, ...]] = set()
    problems: set[tuple[Any, ...]] = set()  # the checks in `seen` that found something
    # A seed changes no setting: one per block, unless an exclude rule names seeds (then every cell).
    one_seed = not any("seed" in rule for rule in suite.exclude)
    for checked, (origin, cell) in enumerate(suite.iter_cells(one_seed=one_seed)):
        if checked >= MAX_CELLS:
            break  # a limit raised with --max-cells: the cells past this are checked when they run
        method = cell.get("method")
        if not isinstance(method, str) or checker.recipe(method) is None:
            continue
        if method not in methods:
            methods.add(method)
            for key, value in suite.settings.items():
                if key not in AXES and not errors.has(("settings", key)):
                    if message := checker.setting(method, key, value, peers):
                        errors.add(("settings", key), message)
        base: Loc = ("grid",) if origin is None else ("include", origin)
        names = {"p": cell.get("p.name"), "q": cell.get("q.name"), "model": cell.get("model.name")}
        dataset = cell.get("dataset")
        overrides: dict[str, dict[str, Any]] = {"p": {}, "q": {}}
        bad: set[Any] = set()  # the sides with a wrong key or value in this cell: not built below
        for key, value in cell.items():
            if key in AXES or key in ("p.name", "q.name", "model.name"):
                continue
            target, rest = _axis_target(key)
            if target in overrides:
                overrides[target][rest.split(".")[0]] = value
            # The key once per (method, kernel, origin), at the key; then each value, at its list element.
            for probe, memo in (
                (KEY_ONLY, (method, key, names.get(target), origin)),
                (value, (method, key, id(value), names.get(target), origin)),
            ):
                if memo in problems:
                    bad.add(target)
                if memo in problems or errors.has((*base, key)):
                    break
                if memo in seen:
                    continue
                seen.add(memo)
                if message := _cell_value_problem(checker, method, target, rest, probe, names, dataset, peers):
                    problems.add(memo)
                    bad.add(target)
                    errors.add((*base, key) if probe is KEY_ONLY else _value_loc(suite, base, key, value), message)
                    break
        for side, params in overrides.items():
            memo = (method, side, tuple((k, id(v)) for k, v in params.items()), names[side])
            if not params or side in bad or memo in seen:
                continue
            seen.add(memo)
            merged = {**params, **({"name": names[side]} if names[side] else {})}
            if message := checker.kernel_build(method, side, merged):
                blamed = next((k for k in params if k in message), next(iter(params)))
                errors.add(_value_loc(suite, base, f"{side}.{blamed}", params[blamed]), message)


def _cell_value_problem(
    checker: SpecChecker, method: str, target: str, rest: str, value: Any, names: Mapping[str, Any], dataset: Any,
    peers: list[str],
) -> str | None:
    """What is wrong with one cell key (`target`.`rest`) and its value for `method`, or None."""
    top = rest.split(".")[0]
    if target == "settings":
        return checker.setting(method, rest, value, peers) if "." not in rest else None
    if target in ("p", "q"):
        return checker.kernel_param(method, target, names[target], top, value)
    if target == "model":
        return checker.model_param(method, names["model"], top, value)
    if target == "dataset" and isinstance(dataset, (str, Mapping)) and value is not KEY_ONLY:
        name = dataset if isinstance(dataset, str) else dataset.get("name")
        found = checker.dataset({"name": name, top: value}, required=False)
        return found[0][1] if found else None
    return None
