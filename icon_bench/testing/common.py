"""`ConformanceError` and what every check shares: building the component under test, devices, failures."""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from icon_bench.hooks.registry import Registry, get_registry, split_spec

__all__ = ["ConformanceError"]


class ConformanceError(AssertionError):
    """A component broke a property of its contract; the message says which component and which property."""

    def __init__(self, component: str, property: str, detail: str) -> None:
        self.component = component
        self.property = property
        self.detail = detail
        super().__init__(f"{component}: property {property!r} failed: {detail}")


# ---------------------------------------------------------------------------------------------
# building components
# ---------------------------------------------------------------------------------------------
def _is_spec(obj: Any) -> bool:
    return (
        isinstance(obj, str)
        or (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str))
        or (isinstance(obj, Mapping) and isinstance(obj.get("name"), str))
    )


def _builder(
    kind: str, spec: Any, params: Mapping[str, Any] | None, registry: Registry | None
) -> tuple[str, Callable[[], Any]]:
    """(label for messages, zero-argument builder) for a spec, a factory, or a ready component."""
    params = dict(params or {})
    if _is_spec(spec):
        name, spec_params = split_spec(spec)
        reg = registry or get_registry()
        comp = reg.get(kind, name)
        merged = {**spec_params, **params}
        label = f"{kind} {name!r} ({comp.distribution} {comp.version})"
        return label, lambda: comp.create(**merged)
    if isinstance(spec, type) or (callable(spec) and not isinstance(spec, torch.nn.Module) and _is_factory(spec)):
        label = f"{kind} {getattr(spec, '__qualname__', repr(spec))}"
        return label, lambda: spec(**params)
    if params:
        raise TypeError(f"params given for a ready-made {kind} {spec!r}; pass its factory or spec instead")
    label = f"{kind} {type(spec).__name__}"
    return label, lambda: copy.deepcopy(spec)  # a fresh copy per check: no state leaks between checks


def _is_factory(obj: Any) -> bool:
    # Plain functions and partials are factories; instances with __call__ (divergences, metrics) are not.
    return isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial))


def _build(label: str, build: Callable[[], Any], seed: int) -> Any:
    torch.manual_seed(seed)
    try:
        return build()
    except Exception as exc:
        raise ConformanceError(label, "builds", f"{type(exc).__name__}: {exc}") from exc


def _devices(devices: Sequence[str] | None) -> list[str]:
    if devices is not None:
        return list(devices)
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _fail(label: str, prop: str, detail: str) -> ConformanceError:
    return ConformanceError(label, prop, detail)
