"""YAML loading that keeps each key's line number (for errors) and rejects duplicate keys."""

from __future__ import annotations

import re
from typing import Any

import yaml

from icon_bench.errors import SuiteError

Loc = tuple[Any, ...]


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads YAML 1.2 floats such as ``1e-3``."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # unhashable; SafeConstructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; suites write learning rates that way.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _collect_lines(loader: yaml.SafeLoader, node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else key_node.value
            try:
                sub = (*path, key)
                hash(sub)
            except TypeError:
                continue
            out.setdefault(sub, key_node.start_mark.line + 1)  # the key's line, not its value's
            _collect_lines(loader, value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(loader, item, (*path, i), out)


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        data = loader.construct_document(node)
        lines: dict[Loc, int] = {}
        _collect_lines(loader, node, (), lines)
        return data, lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SuiteError(f"{source}:{line}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}:1: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
