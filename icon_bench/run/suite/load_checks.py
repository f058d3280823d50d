"""Load-time checks across a suite's parts: metrics each method can produce, tuning on data with no val rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from icon_bench.run.suite.spec_check import KEY_ONLY, Problems, SpecChecker, _cell_value_problem
from icon_bench.run.suite.model import _axis_target
from icon_bench.run.suite.model import Suite
from icon_bench.run.suite.yaml_lines import Loc

__all__ = [
    "check_evaluate", "check_tune_space", "check_tuned_data", "check_unlabelled_data", "dataset_entries", "produced_fields",
]

#: What a MethodOutput field is, for messages.
_WHAT = {"embeddings": "embeddings", "clusters": "cluster assignments"}


def dataset_entries(suite: Suite) -> Iterator[tuple[Loc, Any]]:
    """Every dataset spec written in the suite (top level, grid, include entries), with where it is written."""
    if "dataset" in suite.grid:
        values = suite.grid["dataset"]
        if isinstance(values, list):
            yield from ((("grid", "dataset", i), v) for i, v in enumerate(values))
        else:
            yield ("grid", "dataset"), values
    for i, value in enumerate(suite.datasets or []):
        yield ("datasets", i), value
    for i, entry in enumerate(suite.include):
        values = entry.get("dataset")
        if isinstance(values, list):
            yield from ((("include", i, "dataset", j), v) for j, v in enumerate(values))
        elif values is not None:
            yield ("include", i, "dataset"), values


def produced_fields(recipe: Any) -> set[str] | None:
    """The MethodOutput fields a method's output holds (None: not declared, e.g. a plugin method).

    A learned method (train/recipe.Method) embeds every split, and with `output: clusters` also
    assigns clusters; a baseline (train/baselines.Baseline) assigns clusters only.
    """
    from icon_bench.train.baselines import Baseline
    from icon_bench.train.recipe import Method

    splits = ("train", "test", "val")
    if isinstance(recipe, Baseline):
        return {f"{s}_clusters" for s in splits}
    if isinstance(recipe, Method):
        fields = {f"{s}_embeddings" for s in splits}
        if recipe.output == "clusters":
            fields |= {f"{s}_clusters" for s in splits}
        return fields
    return None


def _methods(suite: Suite) -> list[str]:
    values = [suite.grid.get("method"), *(entry.get("method") for entry in suite.include)]
    names = [m for v in values for m in (v if isinstance(v, list) else [v]) if isinstance(m, str)]
    return list(dict.fromkeys(names))


def _metric_problem(checker: SpecChecker, metric: Any, method: str) -> str | None:
    """Why `method` can never give a value of `metric`, or None (also when either is unknown here)."""
    recipe = checker.recipe(method)
    fields = produced_fields(recipe)
    comp = checker.component("metric", metric)
    if fields is None or comp is None:
        return None
    try:
        instance = comp.create()
    except Exception:  # a broken plugin metric: the trial reports it
        return None
    requires = getattr(instance, "requires", None) or ()
    if requires and not any(set(alt) <= fields for alt in requires):
        needs = sorted({_WHAT.get(f.split("_", 1)[-1], f) for alt in requires for f in alt})
        gives = sorted({_WHAT.get(f.split("_", 1)[-1], f) for f in fields})
        return (f"metric {metric!r} needs {' or '.join(needs)}, and method {method!r} gives {' and '.join(gives)} "
                "only; drop it from evaluate or score that method in an include entry with its own evaluate")
    out_dim = getattr(recipe, "out_dim", None)
    if metric == "knn2d" and isinstance(out_dim, int) and out_dim != 2:
        return f"metric 'knn2d' scores 2-D maps, and method {method!r} embeds in {out_dim} dimensions"
    return None


def check_evaluate(suite: Suite, errors: Problems) -> None:
    """`evaluate`: not empty, and every metric one that each of the suite's methods can produce.

    Before, such a metric was left out of the row without a word (kmeans with `evaluate: [knn]`
    stored ok rows with no metric at all).
    """
    if suite.evaluate is None:
        return
    if not suite.evaluate:
        errors.add(("evaluate",), "an empty list would score nothing; leave evaluate out for each method's own metrics")
        return
    checker = SpecChecker()
    for method in _methods(suite):
        for i, metric in enumerate(suite.evaluate):
            if errors.has(("evaluate", i)):
                continue
            if problem := _metric_problem(checker, metric, method):
                errors.add(("evaluate", i), problem)


def check_tuned_data(suite: Suite, errors: Problems) -> None:
    """A `tune:` block needs validation rows: a transductive dataset or `val_fraction: 0` has none.

    Refused at load: the search would run every trial only for it to fail ("no val split"), and
    scoring the search on the test rows would select on test.
    """
    if suite.tune is None:
        return
    for loc, spec in dataset_entries(suite):
        if not isinstance(spec, Mapping):
            continue
        if spec.get("transductive") is True:
            errors.add((*loc, "transductive"), "a transductive dataset has no validation rows for tune: to search on "
                       "(it fits and scores on all rows); drop tune: or transductive")
        elif spec.get("val_fraction") == 0:
            errors.add((*loc, "val_fraction"), "val_fraction: 0 leaves no validation rows for tune: to search on")
    grid_transductive = suite.grid.get("dataset.transductive")
    if grid_transductive is True or (isinstance(grid_transductive, list) and True in grid_transductive):
        errors.add(("grid", "dataset.transductive"), "a transductive dataset has no validation rows for tune: to search on")


def check_unlabelled_data(suite: Suite, errors: Problems) -> None:
    """A method that trains on labels (supcon, cross_entropy) in a cell whose dataset adds unlabelled train
    rows (stl10's `unlabeled: true`): refused at load, as the trial would fail on the rows' missing labels."""
    from icon_bench.train.build import needs_labels

    def unlabelled(spec: Any) -> bool:
        return isinstance(spec, Mapping) and spec.get("unlabeled") is True

    if not any(unlabelled(spec) for _, spec in dataset_entries(suite)) and "dataset.unlabeled" not in suite.grid:
        return  # the common case: no cell to expand
    checker = SpecChecker()
    told: set[tuple[str, Loc]] = set()
    for cell in suite.cells():
        spec = suite.cell_to_spec(cell)
        recipe = checker.recipe(spec["method"])
        if recipe is None or not unlabelled(spec["dataset"]):
            continue
        try:
            recipe = recipe.with_overrides({"p": spec["p"]}) if spec["p"] else recipe
        except Exception:  # a bad override is reported by the spec checks; judge the method's own p
            pass
        if not needs_labels(recipe):
            continue
        name = spec["dataset"].get("name")
        loc = next((loc for loc, d in dataset_entries(suite) if unlabelled(d) and d.get("name") == name),
                   ("grid", "dataset.unlabeled"))
        if (spec["method"], loc) not in told:
            told.add((spec["method"], loc))
            errors.add((*loc, "unlabeled") if loc[-1] != "dataset.unlabeled" else loc,
                       f"method {spec['method']!r} trains on labels, and unlabeled: true adds train rows without one; "
                       "drop unlabeled, or pair it only with methods that train without labels (simclr, ...)")


def check_tune_space(suite: Suite, errors: Problems, params: list[Any]) -> None:
    """Each value a search may try (a list's values, a range's ends) checked as a grid value of each method.

    Before, `space: {epochs: [10, -5]}` loaded and dry-ran, and every trial with -5 failed.
    """
    checker = SpecChecker()
    methods = _methods(suite)
    names = {"p": None, "q": None, "model": None}
    for param in params:
        loc = ("tune", "space", param.key)
        target, rest = _axis_target(param.key)
        for method in methods:
            if errors.has(loc) or _cell_value_problem(checker, method, target, rest, KEY_ONLY, names, None, methods):
                continue  # an unknown key for this method: reported where the cells are checked
            for value in param.values:
                if problem := _cell_value_problem(checker, method, target, rest, value, names, None, methods):
                    errors.add(loc, f"{value!r}: {problem}")
                    break
