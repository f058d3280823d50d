"""Checking by kind and by plugin: `check`, `components` and `check_plugin` over a registry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from icon_bench.hooks import specs as hookspecs
from icon_bench.hooks.registry import Registry, get_registry
from icon_bench.testing.backbone import check_backbone
from icon_bench.testing.common import ConformanceError
from icon_bench.testing.loss import check_divergence, check_kernel
from icon_bench.testing.pipeline import (
    check_claim,
    check_dataset,
    check_method,
    check_metric,
    check_model,
    check_reference,
)

__all__ = ["check", "check_plugin", "components"]


# ---------------------------------------------------------------------------------------------
# whole plugins
# ---------------------------------------------------------------------------------------------
_CHECKS: dict[str, Callable[..., Any]] = {
    "kernel": check_kernel,
    "divergence": check_divergence,
    "method": check_method,
    "dataset": check_dataset,
    "model": check_model,
    "metric": check_metric,
    "reference": check_reference,
    "claim": check_claim,
    "backbone": check_backbone,
}


def check(kind: str, spec: Any, **options: Any) -> Any:
    """Run the check for `kind` (one of hookspecs.KINDS) on `spec`; options go to that check."""
    if kind not in _CHECKS:
        from icon_bench.errors import UnknownNameError

        raise UnknownNameError("component kind", kind, _CHECKS)
    result = _CHECKS[kind](spec, **options)
    if kind in ("kernel", "divergence") and isinstance(spec, str):
        from icon_bench.testing.discovery import check_discovery

        check_discovery(kind, spec, registry=options.get("registry"))  # what loss discovery may draw
    return result


def components(
    plugin: str, *, kinds: Iterable[str] = tuple(hookspecs.KINDS), registry: Registry | None = None
) -> list[tuple[str, str]]:
    """``[(kind, name)]`` a plugin (or distribution) registered: handy for ``pytest.mark.parametrize``."""
    reg = registry or get_registry()
    info = _plugin_infos(plugin, reg)
    wanted = set(kinds)
    found = []
    for entry in (c for i in info for c in i.components):
        kind, name = entry.split(":", 1)
        if kind in wanted:
            found.append((kind, name))
    return found


def _normalise(name: str) -> str:
    # PEP 503: "Icon_Bench.Foo" and "icon-bench-foo" name one distribution.
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_infos(plugin: str, reg: Registry) -> list[Any]:
    infos = [i for i in reg.plugins.values() if plugin == i.name or _normalise(plugin) == _normalise(i.distribution)]
    if not infos:
        known = sorted({i.name for i in reg.plugins.values()} | {i.distribution for i in reg.plugins.values()})
        raise ConformanceError(
            f"plugin {plugin!r}",
            "is installed",
            f"no plugin or distribution of that name is loaded (known: {', '.join(known)}); install it "
            f"with `pip install -e .` and check its [project.entry-points.icon_bench] table",
        )
    for info in infos:
        if info.status == "failed":
            raise ConformanceError(f"plugin {info.name!r} ({info.distribution} {info.version})", "loads", info.error)
        if info.status == "disabled":
            raise ConformanceError(f"plugin {info.name!r}", "is enabled", "it is listed in ICON_BENCH_DISABLE_PLUGINS")
    return infos


def check_plugin(
    distribution_or_plugin_name: str,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
) -> list[str]:
    """Check every component a plugin registered; returns ``["kind:name", ...]`` checked.

    A component whose factory has required parameters needs them in ``params[name]`` (or
    ``params["kind:name"]``); ``options`` passes extra keyword arguments to that component's check.
    Model factories' ``in_shape`` and ``out_dim`` are supplied by the kit.
    """
    reg = registry or get_registry()
    comps = components(distribution_or_plugin_name, registry=reg)
    if not comps:
        raise ConformanceError(f"plugin {distribution_or_plugin_name!r}", "registers components", "it registered none")
    params, options = dict(params or {}), dict(options or {})
    checked = []
    for kind, name in comps:
        key = f"{kind}:{name}"
        comp = reg.get(kind, name)
        given = dict(params.get(key, params.get(name, {})))
        supplied = {"in_shape", "out_dim"} if kind == "model" else set()
        missing = [p.name for p in comp.params if p.required and p.type != "**" and p.name not in {*given, *supplied}]
        if missing:
            raise ConformanceError(
                f"{kind} {name!r} ({comp.distribution})",
                "can be checked",
                f"required parameters {missing} have no values; pass check_plugin(..., params={{{key!r}: {{...}}}})",
            )
        check(kind, name, params=given, registry=reg, **dict(options.get(key, options.get(name, {}))))
        checked.append(key)
    return checked
