"""The error collector of a suite file: every problem as file:line: key: message, with "did you mean"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from icon_bench.errors import SuiteError, did_you_mean, invalid_value
from icon_bench.run.suite.model import Resources, Suite
from icon_bench.run.suite.synonyms import SYNONYMS
from icon_bench.run.suite.tracking import MlflowTrack, Track
from icon_bench.run.suite.tune_block import Scheduler, Tune
from icon_bench.run.suite.yaml_lines import Loc

_SYNONYM_SCOPE: dict[Loc, str] = {(): "top level", ("resources",): "resources"}


class _Errors:
    """Collects 'file:line: key: message' errors and raises them together as one SuiteError."""

    _FIELDS: dict[Loc, list[str]] = {
        (): list(Suite.model_fields),
        ("resources",): list(Resources.model_fields),
        ("tune",): list(Tune.model_fields),
        ("tune", "scheduler"): list(Scheduler.model_fields),
        ("track",): list(Track.model_fields),
        ("track", "mlflow"): list(MlflowTrack.model_fields),
    }

    def __init__(self, source: str, lines: dict[Loc, int]) -> None:
        self.source, self.lines = source, lines
        self.items: dict[tuple[int, str], list[str]] = {}

    def line(self, loc: Loc) -> int:
        while loc not in self.lines and loc:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def has(self, loc: Loc) -> bool:
        return (self.line(loc), _format_loc(loc)) in self.items

    def add(self, loc: Loc, message: str) -> None:
        key = _format_loc(loc)
        self.items.setdefault((self.line(loc), key), [])
        if message not in self.items[(self.line(loc), key)]:
            self.items[(self.line(loc), key)].append(message)

    def add_pydantic(self, err: Mapping[str, Any]) -> None:
        loc = tuple(err["loc"])
        # Union members show up as extra loc parts ('str', 'dict[str,any]'); keep what the data has.
        known: list[Any] = []
        for part in loc:
            if (*known, part) in self.lines:
                known.append(part)
            else:
                break
        kind = err["type"]
        if kind == "extra_forbidden":
            where = tuple(known[:-1])
            self.add(tuple(known), _unknown_key(str(known[-1]), self._FIELDS.get(where, []), _SYNONYM_SCOPE.get(where)))
        elif kind == "missing":
            self.add((*known, loc[len(known)]), "required key is missing")
        else:
            self.add(tuple(known), invalid_value(err))

    def raise_if_any(self) -> None:
        if self.items:
            lines = [
                f"{self.source}:{line}: {key + ': ' if key else ''}{' or '.join(msgs)}"
                for (line, key), msgs in sorted(self.items.items())
            ]
            raise SuiteError("\n".join(lines))


def _format_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_key(key: str, choices: Iterable[str], scope: str | None = None) -> str:
    meant = SYNONYMS.get(scope or "", {}).get(key)
    if meant is None and scope == "top level" and key in _known_settings():
        meant = f"settings.{key}"  # a trainer setting written at the top level
    hint = [meant] if meant else did_you_mean(key, choices)
    return "unknown key" + (f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "") + _non_ascii(key)


def _non_ascii(text: Any) -> str:
    """A note naming the code points of non-ASCII characters: a Cyrillic 'р' looks like 'p' in a message."""
    if not isinstance(text, str) or text.isascii():
        return ""
    return " (non-ASCII: " + ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(text) if not c.isascii()) + ")"


def _known_settings() -> frozenset[str]:
    """Trainer settings and method options (methods may accept more)."""
    from icon_bench.train.recipe import setting_types

    return frozenset(setting_types())
