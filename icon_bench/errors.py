"""Exceptions icon-bench raises, and the "did you mean" helper they share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class IconBenchError(Exception):
    """Base class: an error a user can act on, printed without a traceback by the CLI."""


class UnknownNameError(IconBenchError, KeyError):
    """A name (component, parameter, key) that is not known, with close matches."""

    def __init__(self, what: str, name: str, choices: Iterable[str], where: str = "") -> None:
        self.what, self.name, self.where = what, name, where
        self.choices = sorted(set(choices))
        self.suggestions = did_you_mean(name, self.choices)
        super().__init__(str(self))

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        msg = f"unknown {self.what} {self.name!r}"
        if self.where:
            msg += f" in {self.where}"
        if self.suggestions:
            msg += f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        elif self.choices:
            shown = ", ".join(self.choices[:20]) + (", ..." if len(self.choices) > 20 else "")
            msg += f"; known: {shown}"
        return msg


class DuplicateComponentError(IconBenchError):
    """Two plugins registered the same component name."""


class ComponentTypeError(IconBenchError, TypeError):
    """A component name that built the wrong kind of object (a kernel where a divergence was due)."""


class PluginLoadError(IconBenchError):
    """A plugin failed to import or register (raised only in strict mode)."""


class DataError(IconBenchError):
    """A dataset file or array is missing, malformed, or inconsistent."""


class StoreError(IconBenchError):
    """The results store could not be read or written (permissions, a full disk); names the path."""


class SuiteError(IconBenchError):
    """A suite file is malformed; the message names the file, line and key."""


class ClusterError(IconBenchError):
    """A Ray cluster could not be joined (nothing listens, not Ray, a token is needed)."""


class TrialError(IconBenchError):
    """A trial stopped for a reason worth reporting (diverged, NaN loss, bad settings)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Close matches of `name` among `choices`, best first (case-insensitive)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=cutoff)
    return [lowered[h] for h in hits]


def invalid_value(err: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as 'input should be ... (got X)'."""
    msg = str(err["msg"])
    msg = msg[0].lower() + msg[1:] if msg else "invalid value"
    if msg.startswith("value error, "):  # a validator's own ValueError already says what is wrong
        msg = msg[len("value error, ") :]
    return f"{msg} (got {short_repr(err.get('input'))})"


def short_repr(value: Any, most: int = 60) -> str:
    """repr() cut to `most` characters, so a message quoting user input stays one short line."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."
