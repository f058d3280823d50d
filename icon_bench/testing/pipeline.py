"""The checks of the other stages: `check_method`, `check_dataset`, `check_model`, `check_metric`, `check_reference`, `check_claim`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from icon_bench.hooks.registry import Registry, get_registry, split_spec
from icon_bench.testing.common import _build, _builder, _fail, _is_spec
from icon_bench.testing.fixtures import make_data

__all__ = ["check_claim", "check_dataset", "check_method", "check_metric", "check_model", "check_reference"]


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
#: Overrides that keep a trained method's run tiny: one epoch, one batch of make_data()'s 64 points.
TINY_OVERRIDES: dict[str, Any] = {"settings": {"epochs": 1, "batch_size": 64}}


def check_method(
    spec_or_method: Any,
    *,
    params: Mapping[str, Any] | None = None,
    data: Any = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    registry: Registry | None = None,
) -> Any:
    """Run a method (name/spec, factory, or ``Method``) on tiny blobs and check its ``MethodOutput``.

    The method follows what ``run_trial`` calls: ``with_overrides(spec)`` returns the resolved
    method, whose ``metrics`` (registered metric names) are the defaults, and
    ``run(data, *, seed, device, overrides, progress)`` trains and embeds.

    Embeddings, when returned, are (n_train, d) and (n_test, d) with one d and finite values;
    clusters, when returned, are int64 (n,) labels >= 0; at least one of the two is returned;
    ``history`` maps names to lists of finite floats; ``info`` is a dict. A method whose resolved
    recipe says ``seed_independent`` runs again under ``seed + 1`` and must give the same output.
    Returns the output.
    """
    label, build = _builder("method", spec_or_method, params, registry)
    method = _build(label, build, seed)
    data = make_data(seed=seed) if data is None else data
    if overrides is None:
        # Trained recipes (those with trainer `settings`) get one tiny epoch; baselines take no settings.
        overrides = TINY_OVERRIDES if isinstance(getattr(method, "settings", None), dict) else {}
    overrides = copy.deepcopy(dict(overrides))
    if not callable(getattr(method, "run", None)):
        raise _fail(label, "is a Method", f"{type(method).__name__} has no run(data, *, seed, device, overrides)")
    # run_trial resolves the trial spec first: with_overrides(spec).metrics are the default metrics.
    if not callable(getattr(method, "with_overrides", None)):
        raise _fail(label, "has with_overrides", f"{type(method).__name__} lacks with_overrides(overrides) -> method")
    try:
        recipe = method.with_overrides(copy.deepcopy(overrides))
    except Exception as exc:
        raise _fail(label, "with_overrides", f"{type(exc).__name__}: {exc}") from exc
    metric_names = getattr(recipe, "metrics", None)
    if not isinstance(metric_names, (list, tuple)) or not all(isinstance(m, str) for m in metric_names):
        raise _fail(
            label, "metrics", f"with_overrides(...).metrics must be a list of metric names, got {metric_names!r}"
        )
    reg = registry or get_registry()
    for metric_name in metric_names:
        if metric_name not in reg.names("metric"):
            raise _fail(
                label, "metrics", f"default metric {metric_name!r} is not registered ({', '.join(reg.names('metric'))})"
            )
    try:
        out = method.run(data, seed=seed, device=device, overrides=overrides, progress=False)
    except Exception as exc:
        raise _fail(label, "runs on tiny data", f"{type(exc).__name__}: {exc}") from exc
    _check_method_output(label, out, data)
    if getattr(recipe, "seed_independent", False) is True:
        _check_seed_independent(label, method, data, device, overrides, seed)
    return out


def _check_seed_independent(
    label: str, method: Any, data: Any, device: str, overrides: dict[str, Any], seed: int
) -> None:
    """A method that says its result does not depend on the seed gives the same output under another seed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several threads may sum in another order: that is not the seed
    try:
        again = method.run(data, seed=seed + 1, device=device, overrides=copy.deepcopy(overrides), progress=False)
        first = method.run(data, seed=seed, device=device, overrides=copy.deepcopy(overrides), progress=False)
    finally:
        torch.set_num_threads(threads)
    fields = ("train_embeddings", "test_embeddings", "val_embeddings", "train_clusters", "test_clusters", "val_clusters")
    for field in fields:
        a, b = getattr(first, field, None), getattr(again, field, None)
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
            raise _fail(
                label, "seed_independent",
                f"it says the seed cannot change its result, but seeds {seed} and {seed + 1} gave different "
                f"{field}; make every random choice fixed, or do not declare seed_independent",
            )


def _check_method_output(label: str, out: Any, data: Any) -> None:
    """The ``MethodOutput`` contract: shapes, dtypes and finiteness of what a method returned."""
    fields = ("train_embeddings", "test_embeddings", "train_clusters", "test_clusters", "history", "info")
    missing = [f for f in fields if not hasattr(out, f)]
    if missing:
        raise _fail(label, "returns a MethodOutput", f"{type(out).__name__} lacks {missing}")
    # val_* are optional (protocol 2): a val trial hands the method its val rows as the test split.
    n = {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)}
    dims = set()
    for split in n:
        emb = getattr(out, f"{split}_embeddings", None)
        if emb is not None:
            if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != n[split]:
                raise _fail(
                    label, "embedding shape", f"{split}_embeddings: expected ({n[split]}, d), got {_shape(emb)}"
                )
            if not bool(torch.isfinite(emb.float()).all()):
                raise _fail(label, "finite embeddings", f"{split}_embeddings has NaN or inf")
            dims.add(emb.shape[1])
        clusters = getattr(out, f"{split}_clusters", None)
        if clusters is not None:
            if not isinstance(clusters, torch.Tensor) or clusters.shape != (n[split],):
                raise _fail(label, "cluster shape", f"{split}_clusters: expected ({n[split]},), got {_shape(clusters)}")
            if clusters.dtype != torch.int64 or bool((clusters < 0).any()):
                raise _fail(label, "cluster labels", f"{split}_clusters must be int64 >= 0, got {clusters.dtype}")
    if len(dims) > 1:
        raise _fail(label, "embedding shape", f"the splits' embeddings differ in width: {sorted(dims)}")
    if all(getattr(out, f) is None for f in fields[:4]):
        raise _fail(label, "returns something to evaluate", "no embeddings and no clusters")
    if not isinstance(out.history, dict):
        raise _fail(label, "history", f"history must be a dict of lists, got {type(out.history).__name__}")
    for key, values in out.history.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise _fail(label, "history", f"history[{key!r}] must be a list of finite floats, got {values!r}")
    if not isinstance(out.info, dict):
        raise _fail(label, "info", f"info must be a dict, got {type(out.info).__name__}")


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
def check_dataset(
    spec_or_dataset: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> Any:
    """Load a dataset (name/spec, factory, or object with ``load()``) and check its ``DataSplits``.

    Both splits non-empty; features and labels aligned (same length); int64 labels in
    [0, num_classes); finite float32 features with the same trailing shape in both splits.
    Returns the splits.
    """
    label, build = _builder("dataset", spec_or_dataset, params, registry)
    dataset = _build(label, build, seed)
    if not callable(getattr(dataset, "load", None)):
        raise _fail(label, "has load()", f"{type(dataset).__name__} has no load() -> DataSplits")
    try:
        data = dataset.load()
    except Exception as exc:
        raise _fail(label, "loads", f"{type(exc).__name__}: {exc}") from exc
    for field in ("x_train", "y_train", "x_test", "y_test", "num_classes"):
        if not hasattr(data, field):
            raise _fail(label, "returns DataSplits", f"{type(data).__name__} lacks {field!r}")
    shapes = []
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise _fail(
                label,
                "tensors",
                f"x_{split}/y_{split} must be torch tensors, got {type(x).__name__}/{type(y).__name__}",
            )
        if len(x) == 0:
            raise _fail(label, "non-empty splits", f"the {split} split is empty")
        if len(x) != len(y) or y.dim() != 1:
            raise _fail(label, "aligned features and labels", f"{split}: x {tuple(x.shape)} vs y {tuple(y.shape)}")
        if y.dtype != torch.int64:
            raise _fail(label, "int64 labels", f"y_{split} has dtype {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= int(data.num_classes):
            raise _fail(
                label,
                "labels in [0, num_classes)",
                f"y_{split} spans [{int(y.min())}, {int(y.max())}], num_classes={data.num_classes}",
            )
        if x.dtype != torch.float32:
            raise _fail(label, "float32 features", f"x_{split} has dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise _fail(label, "finite features", f"x_{split} holds NaN or inf")
        shapes.append(tuple(x.shape[1:]))
    if shapes[0] != shapes[1]:
        raise _fail(label, "same feature shape in both splits", f"train {shapes[0]} vs test {shapes[1]}")
    return data


# ---------------------------------------------------------------------------------------------
# models and metrics
# ---------------------------------------------------------------------------------------------
#: Input shapes tried, in order, for a model: a vector and a small image; a model must take one of them.
MODEL_SHAPES: tuple[tuple[int, ...], ...] = ((8,), (3, 32, 32))


def check_model(
    spec_or_factory: Any,
    *,
    params: Mapping[str, Any] | None = None,
    in_shapes: Sequence[tuple[int, ...]] = MODEL_SHAPES,
    out_dim: int = 5,
    example_input: torch.Tensor | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> None:
    """Build a model ``factory(in_shape, out_dim, **params)`` and check (4, *in_shape) -> (4, out_dim).

    The first of `in_shapes` the model accepts is used (or `example_input`, e.g. indices for a
    lookup table); output finite, gradients of its parameters finite.
    """
    extra = dict(params or {})
    if _is_spec(spec_or_factory):
        name, spec_params = split_spec(spec_or_factory)
        comp = (registry or get_registry()).get("model", name)
        label = f"model {name!r} ({comp.distribution} {comp.version})"
        factory: Callable[..., Any] = comp.factory
        extra = {**spec_params, **extra}
    else:
        label, factory = f"model {getattr(spec_or_factory, '__qualname__', spec_or_factory)!r}", spec_or_factory
    attempts = [(tuple(example_input.shape[1:]), example_input)] if example_input is not None else []
    attempts += [(shape, None) for shape in in_shapes] if example_input is None else []
    errors = []
    for shape, x in attempts:
        torch.manual_seed(seed)
        try:
            model = factory(in_shape=shape, out_dim=out_dim, **extra)
            x = torch.randn(4, *shape) if x is None else x
            y = model(x)
        except Exception as exc:
            errors.append(f"in_shape={shape}: {type(exc).__name__}: {exc}")
            continue
        n = x.shape[0]
        if not isinstance(y, torch.Tensor) or y.shape != (n, out_dim):
            raise _fail(label, "output shape", f"in_shape={shape}: expected ({n}, {out_dim}), got {_shape(y)}")
        if not bool(torch.isfinite(y).all()):
            raise _fail(label, "finite output", f"in_shape={shape}: NaN or inf in the output")
        y.float().square().mean().backward()
        for pname, p in model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                raise _fail(label, "finite gradients", f"parameter {pname!r}")
        return
    raise _fail(label, "builds and runs", "; ".join(errors))


def check_metric(
    spec_or_metric: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> float | None:
    """Score a perfect and a random MethodOutput on tiny blobs: a finite float (or None: does not apply), deterministic.

    The metric must have a string ``name`` and a tuple of alternatives ``requires``. Returns the
    perfect output's score.
    """
    from icon_bench.evaluation.metrics import MethodOutput

    label, build = _builder("metric", spec_or_metric, params, registry)
    metric = _build(label, build, seed)
    if not isinstance(getattr(metric, "name", None), str) or not callable(metric):
        raise _fail(label, "is a Metric", f"{type(metric).__name__} needs a str `name` and __call__(output, data)")
    data = make_data(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        # embeddings = the (well separated) features, clusters = the labels: a metric's best case
        "perfect": MethodOutput(data.x_train[:, :2], data.x_test[:, :2], data.y_train.clone(), data.y_test.clone()),
        "random": MethodOutput(
            torch.randn(len(data.y_train), 2, generator=gen),
            torch.randn(len(data.y_test), 2, generator=gen),
            torch.randint(0, data.num_classes, (len(data.y_train),), generator=gen),
            torch.randint(0, data.num_classes, (len(data.y_test),), generator=gen),
        ),
    }
    scores = {}
    for what, output in outputs.items():
        try:
            first, second = metric(copy.deepcopy(output), data), metric(copy.deepcopy(output), data)
        except Exception as exc:
            raise _fail(label, "runs", f"on a {what} output: {type(exc).__name__}: {exc}") from exc
        for value in (first, second):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(float(value))):
                raise _fail(label, "finite float or None", f"on a {what} output: got {value!r}")
        if first != second:
            raise _fail(label, "deterministic", f"on a {what} output: {first!r} then {second!r}")
        scores[what] = first
    return scores["perfect"]


def check_reference(
    spec_or_factory: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> list[Any]:
    """Build a reference set (name, factory, or its list of entries) and check every entry; returns the References.

    Each entry must be a valid ``icon_bench.report.Reference`` (paper, dataset, method, metric,
    key, a finite value, +- not negative); its metric must be a registered metric, or no report
    would ever match it to a table. At least one entry.
    """
    from icon_bench.errors import IconBenchError
    from icon_bench.report.references import validate_entries

    label, build = _builder("reference", spec_or_factory, params, registry)
    entries = _build(label, build, seed)
    try:
        refs = validate_entries(entries, label)
    except IconBenchError as exc:
        raise _fail(label, "valid entries", str(exc)) from None
    if not refs:
        raise _fail(label, "has entries", "the factory returned no reference")
    metrics = set((registry or get_registry()).names("metric"))
    for i, ref in enumerate(refs):
        if not math.isfinite(ref.value) or (ref.pm is not None and not math.isfinite(ref.pm)):
            raise _fail(label, "finite values", f"entry {i}: value {ref.value!r} +- {ref.pm!r}")
        if ref.metric not in metrics:
            raise _fail(label, "names a registered metric", f"entry {i}: unknown metric {ref.metric!r}")
    return refs


def check_claim(
    spec_or_factory: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> list[Any]:
    """Build a claim set (name, factory, or its list of claims) and check every claim; returns the Claims.

    Each claim must be a valid ``icon_bench.report.Claim`` (id, paper, statement, metric, filters on
    real keys, contender and baseline apart, expect better or worse) naming a registered metric;
    a ``published`` block must name a registered reference set whose entries its filters match.
    At least one claim.
    """
    from icon_bench.report.claims import validate_claims
    from icon_bench.report.claims_page import published_text
    from icon_bench.report.references import load_references

    reg = registry or get_registry()
    label, build = _builder("claim", spec_or_factory, params, registry)
    claims, problems = validate_claims(_build(label, build, seed), label, reg.names("metric"))
    if problems:
        raise _fail(label, "valid claims", problems[0])
    if not claims:
        raise _fail(label, "has claims", "the factory returned no claim")
    refs = load_references(reg, strict=True) if any(c.published for c in claims) else []
    for claim in claims:
        bad = published_text(claim, refs)[1]
        if bad:
            raise _fail(label, "published figures resolve", bad[0])
    return claims
