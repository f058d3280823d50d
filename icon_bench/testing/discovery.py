"""The conformance check of a component's `discovery` declaration: its shape, tasks, ranges, and that it builds there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icon_bench.hooks.registry import Registry, get_registry
from icon_bench.hooks.specs import DISCOVERY_TASKS
from icon_bench.testing.common import _fail

__all__ = ["check_discovery"]


def check_discovery(kind: str, name: str, *, registry: Registry | None = None) -> None:
    """Check what a registered kernel or divergence declares for loss discovery (nothing to check when it declares none).

    The declaration is a mapping (a kernel's: side "p" / "q" -> {tasks, params}; a divergence's:
    {tasks, params}); tasks are among hooks.specs.DISCOVERY_TASKS; each range parses as a suite's tune
    space writes it and names one of the component's parameters; and the component builds at every
    range's two ends (a divergence's also gives finite values there), so a search never draws a value
    the component refuses.
    """
    from icon_bench.run.suite.tune_block import parse_param

    component = (registry or get_registry()).get(kind, name)
    label = f"{kind} {component.name!r} ({component.distribution} {component.version})"
    decl = component.discovery
    if decl is None:
        return
    if not isinstance(decl, Mapping):
        raise _fail(label, "discovery declaration", f"expected a mapping, got {type(decl).__name__}")
    entries = {"divergence": decl} if kind == "divergence" else dict(decl)
    known = {p.name for p in component.params}
    for side, entry in entries.items():
        if kind == "kernel" and side not in ("p", "q"):
            raise _fail(label, "discovery declaration", f"sides are 'p' and 'q', got {side!r}")
        tasks = tuple((entry or {}).get("tasks", ()))
        unknown = [t for t in tasks if t not in DISCOVERY_TASKS]
        if not tasks or unknown:
            raise _fail(label, "discovery declaration", f"{side}: tasks must be among {list(DISCOVERY_TASKS)}, "
                        f"got {list(tasks)}")
        for key, written in dict(entry.get("params") or {}).items():
            if not component.accepts_any and key not in known:
                raise _fail(label, "discovery declaration", f"{side}: {key!r} is not a parameter ({sorted(known)})")
            try:
                param = parse_param(key, written)
            except ValueError as exc:
                raise _fail(label, "discovery declaration", f"{side}.{key}: {exc}") from None
            for value in _ends(param):
                _builds_at(label, kind, component, key, value)


def _ends(param: Any) -> list[Any]:
    return list(param.values) if param.kind == "choice" else [param.values[0], param.values[1]]


def _builds_at(label: str, kind: str, component: Any, key: str, value: Any) -> None:
    import torch

    try:
        built = component.create(**{key: value})
        if kind == "divergence":
            gen = torch.Generator().manual_seed(0)
            log_p = torch.log_softmax(torch.randn(4, 6, generator=gen, dtype=torch.float64), -1)
            log_q = torch.log_softmax(torch.randn(4, 6, generator=gen, dtype=torch.float64), -1)
            values = built(log_p, log_q)
            if not torch.isfinite(values).all():
                raise ValueError(f"non-finite values {values.tolist()}")
    except Exception as exc:  # noqa: BLE001 - every failure is this property's
        raise _fail(label, "discovery declaration", f"fails at {key}={value!r}: {type(exc).__name__}: {exc}") from None
