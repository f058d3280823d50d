"""YAML loading that keeps each key's line number (for errors), rejects duplicate keys, and bounds its input."""

from __future__ import annotations

import re
from typing import Any

import yaml

from icon_bench.errors import SuiteError

Loc = tuple[Any, ...]

#: A suite is a few kilobytes; anything this big is a mistake (or an attack) and is not parsed.
MAX_SUITE_BYTES = 1 << 20
#: Values (scalars, lists, mappings) a suite may hold once aliases are expanded ("billion laughs").
MAX_VALUES = 100_000
#: Nesting depth, aliases expanded: deeper input would exhaust the recursion of every later step.
MAX_DEPTH = 40


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------
class _Refused(yaml.composer.ComposerError):
    """Valid YAML past one of the bounds above (reported without the "invalid YAML" prefix)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, reads YAML 1.2 floats such as ``1e-3``, and bounds its nodes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self.anchor_names: dict[int, str] = {}  # id(node) -> its anchor, for messages about aliases

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)  # an alias is the anchor's node, not a new one
        event = self.peek_event()
        self._nodes += 1
        self._depth += 1
        # Checked while composing, so a huge or deep file is refused before it is held in memory.
        if self._nodes > MAX_VALUES:
            raise _Refused(f"suite too large: more than {MAX_VALUES} values", event.start_mark)
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            self.anchor_names[id(node)] = event.anchor
        return node

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

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"integer too long ({len(node.value)} characters)", node.start_mark
            ) from None


_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)
# PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; suites write learning rates that way.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, anchors: dict[int, str]) -> None:
    """Refuse recursive aliases and alias trees that expand past MAX_VALUES values or MAX_DEPTH levels.

    Aliases share the anchor's node, so the document holds few nodes while every consumer of it
    (line numbers, validation, the grid) walks the expanded tree: sizes are summed bottom-up, each
    node once (iterative, so no input can exhaust the recursion here).
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            name = f"&{anchors[key]}" if key in anchors else "the suite"
            if size[key] > MAX_VALUES:
                raise _Refused(f"aliases expand {name} to more than {MAX_VALUES} values", node.start_mark)
            if depth[key] > MAX_DEPTH:
                raise _Refused(f"aliases nest {name} deeper than {MAX_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        if key in on_path:
            name = anchors.get(key, "?")
            raise _Refused(f"recursive alias: *{name} inside its own anchor &{name}", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


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


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _bad_character(exc: yaml.reader.ReaderError) -> str:
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return f"character U+{ord(char):04X} is not allowed (a control character)"


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    if len(text) > MAX_SUITE_BYTES:
        raise SuiteError(f"{source}:1: suite file too large ({len(text)} characters; at most {MAX_SUITE_BYTES})")
    try:
        loader = _LineLoader(text)  # the reader refuses control characters here, before parsing
    except yaml.reader.ReaderError as exc:
        raise SuiteError(f"{source}:{_line_at(text, exc.position)}: invalid YAML: {_bad_character(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}
        _check_expansion(node, loader.anchor_names)
        data = loader.construct_document(node)
        lines: dict[Loc, int] = {}
        _collect_lines(loader, node, (), lines)
        return data, lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        prefix = "" if isinstance(exc, _Refused) else "invalid YAML: "
        raise SuiteError(f"{source}:{line}: {prefix}{what}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}:1: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
