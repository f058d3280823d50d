"""The plugin machinery: hook specifications (`specs`) and the registry that loads plugins (`registry`)."""

from __future__ import annotations

from icon_bench.hooks.registry import (
    BUILTIN_MODULES,
    Component,
    Param,
    PluginInfo,
    Registry,
    create,
    create_as,
    get_registry,
    load_registry,
    set_registry,
    split_spec,
)
from icon_bench.hooks.specs import ENTRY_POINT_GROUP, KINDS, PROJECT, Register, hookimpl, hookspec

__all__ = [
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PROJECT",
    "Component",
    "Param",
    "PluginInfo",
    "Register",
    "Registry",
    "create",
    "create_as",
    "get_registry",
    "hookimpl",
    "hookspec",
    "load_registry",
    "set_registry",
    "split_spec",
]
