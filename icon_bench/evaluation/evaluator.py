"""The versioned evaluation protocol: resolving metrics, `evaluate`, the protocol record and its version.

Every metric carries its settings; `protocol_settings()` collects them. The protocol version is
`PROTOCOL_VERSION` ("1") while every setting has its default, and "1+<hash>" of the changed
settings otherwise, so results measured under different settings never share a version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from icon_bench.errors import IconBenchError
from icon_bench.evaluation.metrics import _FACTORIES, DEFAULT_METRICS, MethodOutput, Metric
from icon_bench.hooks.specs import hookimpl

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits

__all__ = ["PROTOCOL_VERSION", "evaluate", "protocol", "protocol_settings", "protocol_version", "resolve_metrics"]


PROTOCOL_VERSION = "1"


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


def protocol_version(settings: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """PROTOCOL_VERSION when every metric's settings are the defaults, else "<version>+<8 hex>".

    The hash covers only the metrics whose settings differ from their defaults (and metrics that
    are not built-ins), so adding or dropping a default metric leaves the version alone.
    """
    if settings is None:
        return PROTOCOL_VERSION
    changed = {}
    for name, s in settings.items():
        factory = _FACTORIES.get(name)
        default = json.loads(_canonical(factory().settings)) if factory else None
        if json.loads(_canonical(dict(s))) != default:
            changed[name] = dict(s)
    if not changed:
        return PROTOCOL_VERSION
    return f"{PROTOCOL_VERSION}+{hashlib.sha256(_canonical(changed).encode()).hexdigest()[:8]}"


def protocol(metrics: Iterable[Any] | None = None) -> dict[str, Any]:
    """The result row's protocol record: ``{"version", "settings": {metric: settings}, "metrics": {metric: kind}}``.

    A metric's kind is ``{"higher_is_better": bool, "fraction": bool}``, for reports. It is not part of
    the version: it says how to read the values, not how they were measured. A metric object that does
    not subclass `Metric` and lacks the attributes gets no entry, so reports fall back to guessing.
    """
    resolved = resolve_metrics(metrics)
    settings = _settings_of(resolved)
    kinds = {
        m.name: {"higher_is_better": bool(m.higher_is_better), "fraction": bool(m.fraction)}
        for m in resolved
        if hasattr(m, "higher_is_better") and hasattr(m, "fraction")
    }
    return {"version": protocol_version(settings), "settings": settings, "metrics": kinds}


def evaluate(output: MethodOutput, data: DataSplits, metrics: list[Any] | None = None) -> dict[str, float]:
    """Run the metrics on one method's output; metrics that do not apply to it are left out.

    `metrics` are names, specs or Metric objects; None runs every built-in that applies.
    """
    result: dict[str, float] = {}
    for m in resolve_metrics(metrics):
        value = m(output, data)
        if value is not None:
            result[m.name] = float(value)
    return result


@hookimpl
def register_metrics(register: Callable[..., None]) -> None:
    for name, factory in _FACTORIES.items():
        register(name, factory)
