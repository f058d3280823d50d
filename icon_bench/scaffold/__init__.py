"""Scaffolding a new plugin package (`icon-bench new-plugin`): the command and the file templates."""

from __future__ import annotations

from icon_bench.scaffold.command import KINDS, ScaffoldError, add_commands, create_plugin, validate_name

__all__ = ["KINDS", "ScaffoldError", "add_commands", "create_plugin", "validate_name"]
