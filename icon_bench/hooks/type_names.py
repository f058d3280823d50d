"""Declared types as the text a reader writes: ``int >= 0 | null``, ``'adam' | 'adamw'``, ``list of string``."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["type_text"]

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "string", type(None): "null", Any: "any"}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _constraints(extras: Iterable[Any]) -> str:
    parts = []
    for extra in extras:
        for item in getattr(extra, "metadata", None) or [extra]:
            for attr, sign in _BOUNDS:
                if getattr(item, attr, None) is not None:
                    parts.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(parts)


def type_text(annotation: Any) -> str:
    """A declared type as a reader writes it: `int >= 0 | null`, `'adam' | 'adamw'`, `list of string`.

    Shared by docs/suite.md (run/suite/doc.py) and the method defaults `icon-bench plugins` shows
    (train/recipe.py, train/baselines.py).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _constraints(args[1:])
        return f"{type_text(args[0])} {bounds}".strip()
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):  # a pydantic model
        return f"mapping ({annotation.__name__})"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
