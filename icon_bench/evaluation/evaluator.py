"""The versioned evaluation protocol: resolving metrics, `evaluate`, the protocol record and its version.

Protocol 2: train / val / test splits (val carved from train, `icon_bench.data.load_dataset`);
a trial scores the test split, or the val split when it tunes. Every metric carries its settings
and the splits theirs (`SPLITS_KEY`: val_fraction, val_seed, transductive); `protocol()` records
them. The version is `PROTOCOL_VERSION` ("2") while every setting has its default and
"2+<hash>" of the changed ones otherwise, so results measured under different settings never
share a version. Rows of protocol 1 (no val split) carry "1".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from icon_bench.data.options import DEFAULT_SPLITS, SPLITS
from icon_bench.errors import IconBenchError
from icon_bench.evaluation.metrics import _FACTORIES, DEFAULT_METRICS, MethodOutput, Metric
from icon_bench.hooks.specs import hookimpl

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits

__all__ = [
    "PROTOCOL_VERSION",
    "SPLITS",
    "SPLITS_KEY",
    "evaluate",
    "protocol",
    "protocol_settings",
    "protocol_version",
    "resolve_metrics",
    "split_settings",
]


PROTOCOL_VERSION = "2"
#: The key of the split settings inside a protocol record's settings (no metric may take this name).
SPLITS_KEY = "splits"


def resolve_metrics(metrics: Iterable[Any] | None = None) -> list[Metric]:
    """Metric objects from names, ``{"name": ..., **settings}`` specs or Metric instances (default: all built-ins)."""
    from icon_bench.hooks.registry import create

    out: list[Metric] = []
    for spec in DEFAULT_METRICS if metrics is None else metrics:
        m = spec if isinstance(spec, Metric) else create("metric", spec)
        if not callable(m) or not isinstance(getattr(m, "name", None), str):
            raise IconBenchError(f"metric {spec!r} did not build a metric (an object with a name, called on output)")
        out.append(m)
    names = [m.name for m in out]
    if SPLITS_KEY in names:
        raise IconBenchError(f"a metric may not be named {SPLITS_KEY!r}: protocol records keep the split settings there")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IconBenchError(f"metric(s) {', '.join(dupes)} named more than once")
    return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def protocol_settings(metrics: Iterable[Any] | None = None) -> dict[str, dict[str, Any]]:
    """metric name -> its settings, for the named metrics (default: every built-in, at default settings)."""
    return _settings_of(resolve_metrics(metrics))


def _settings_of(metrics: Iterable[Metric]) -> dict[str, dict[str, Any]]:
    return {m.name: json.loads(_canonical(m.settings)) for m in metrics}


def split_settings(splits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The split settings of a protocol record: DEFAULT_SPLITS updated from `splits` (a dataset entry or its meta).

    Transductive mode has no val split, so its val_fraction is 0 whatever was asked.
    """
    given = {k: splits[k] for k in DEFAULT_SPLITS if splits is not None and k in splits}
    out = {**DEFAULT_SPLITS, **given}
    transductive = bool(out["transductive"])
    return {
        "val_fraction": 0.0 if transductive else float(out["val_fraction"]),
        "val_seed": int(out["val_seed"]),
        "transductive": transductive,
    }


def protocol_version(settings: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """PROTOCOL_VERSION when every metric's settings and the split settings are the defaults, else "<version>+<8 hex>".

    The hash covers only the metrics whose settings differ from their defaults (and metrics that
    are not built-ins), and the split settings when they differ, so adding or dropping a default
    metric leaves the version alone.
    """
    if settings is None:
        return PROTOCOL_VERSION
    changed = {}
    for name, s in settings.items():
        if name == SPLITS_KEY:
            if split_settings(s) != split_settings():
                changed[name] = split_settings(s)
            continue
        factory = _FACTORIES.get(name)
        default = json.loads(_canonical(factory().settings)) if factory else None
        if json.loads(_canonical(dict(s))) != default:
            changed[name] = dict(s)
    if not changed:
        return PROTOCOL_VERSION
    return f"{PROTOCOL_VERSION}+{hashlib.sha256(_canonical(changed).encode()).hexdigest()[:8]}"


def protocol(
    metrics: Iterable[Any] | None = None, splits: Mapping[str, Any] | None = None, split: str = "test"
) -> dict[str, Any]:
    """The result row's protocol record: ``{"version", "split", "settings": {metric: settings, "splits": {...}}, "metrics"}``.

    `splits` holds val_fraction, val_seed and transductive (a loaded dataset's meta will do;
    None: the defaults); `split` is the split the metrics score ("test" or "val").

    A metric's kind is ``{"higher_is_better": bool, "fraction": bool}``, for reports. It is not part of
    the version: it says how to read the values, not how they were measured. A metric object that does
    not subclass `Metric` and lacks the attributes gets no entry, so reports fall back to guessing.
    """
    if split not in SPLITS:
        raise IconBenchError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    resolved = resolve_metrics(metrics)
    settings: dict[str, Any] = {**_settings_of(resolved), SPLITS_KEY: split_settings(splits)}
    kinds = {
        m.name: {"higher_is_better": bool(m.higher_is_better), "fraction": bool(m.fraction)}
        for m in resolved
        if hasattr(m, "higher_is_better") and hasattr(m, "fraction")
    }
    return {"version": protocol_version(settings), "split": split, "settings": settings, "metrics": kinds}


def evaluate(
    output: MethodOutput, data: DataSplits, metrics: list[Any] | None = None, split: str = "test"
) -> dict[str, float]:
    """Run the metrics on one method's output, scoring the `split` rows; metrics that do not apply are left out.

    `metrics` are names, specs or Metric objects; None runs every built-in that applies. The train
    split is the kNN / probe bank; `split` ("test" or "val") holds the queries and the clusters
    scored. Metrics read the test slots, so for "val" they get the val rows in those slots.
    """
    if split not in SPLITS:
        raise IconBenchError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "val":
        output, data = _val_in_test_slots(output, data)
    result: dict[str, float] = {}
    for m in resolve_metrics(metrics):
        value = m(output, data)
        if value is not None:
            result[m.name] = float(value)
    return result


def _val_in_test_slots(output: MethodOutput, data: DataSplits) -> tuple[MethodOutput, DataSplits]:
    """The output and data with the val rows where metrics read the scored split."""
    if len(data.y_val) == 0:
        raise IconBenchError(f"dataset {data.name!r} has no val split to score (val_fraction=0 or transductive)")
    if output.val_embeddings is None and output.val_clusters is None:
        raise IconBenchError("the method gave no val embeddings or clusters to score on the val split")
    # A fresh output (its k-means cache starts empty): the test slots now hold the val rows.
    moved = dataclasses.replace(output, test_embeddings=output.val_embeddings, test_clusters=output.val_clusters)
    return moved, data.val_as_test()


@hookimpl
def register_metrics(register: Callable[..., None]) -> None:
    for name, factory in _FACTORIES.items():
        register(name, factory)
