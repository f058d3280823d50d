"""The search space over losses: p, q and divergence choices with their conditional parameters, from declarations.

Which kernels and divergences fit a task is what each component declares in its `discovery`
attribute (side, tasks, parameter ranges): the built-ins and plugins alike, never a list here. A
suite's `discover.space` may narrow the choices, give ranges for a component that declares none,
and set the other keys (lr, p.debias, q.debias, p.propagate, settings). A component's parameters
are drawn only when it is drawn (no `a` under kl): Optuna's define-by-run API asks for them after
the choice, under names that carry the component ("divergence.alpha.a"), so two components'
parameters never share a distribution.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from icon_bench.run.suite.discover_block import DEFAULT_EXTRA, Discover
from icon_bench.run.suite.ids import canonical_json
from icon_bench.run.suite.tune_block import Param, parse_param

__all__ = ["Choice", "Space", "SpaceError", "build_space", "declared"]

SIDES = ("p", "q", "divergence")


class SpaceError(ValueError):
    """A discover space that cannot be built; ``loc`` is the key path in the suite (for file:line)."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclasses.dataclass(frozen=True)
class Choice:
    """One component a side may take, with the ranges of the parameters drawn when it is taken."""

    side: str  # "p", "q" or "divergence"
    name: str
    params: tuple[Param, ...] = ()

    def describe(self) -> Any:
        return {self.name: {p.key: p.describe() for p in self.params}} if self.params else self.name


def _kind(side: str) -> str:
    return "divergence" if side == "divergence" else "kernel"


def declared(side: str, name: str, task: str) -> dict[str, Any] | None:
    """The `discovery` declaration of a registered component for `side` in `task`, or None when it makes none."""
    from icon_bench.hooks.registry import get_registry

    decl = get_registry().get(_kind(side), name).discovery
    if not isinstance(decl, Mapping):
        return None
    entry = decl if side == "divergence" else decl.get(side)
    if not isinstance(entry, Mapping) or task not in tuple(entry.get("tasks", ())):
        return None
    return dict(entry.get("params") or {})


def _params(ranges: Mapping[str, Any], loc: tuple[Any, ...]) -> tuple[Param, ...]:
    out = []
    for key, value in ranges.items():
        try:
            out.append(parse_param(str(key), value))
        except ValueError as exc:
            raise SpaceError((*loc, key), str(exc)) from None
    return tuple(out)


def _choices(side: str, written: Any, task: str) -> list[Choice]:
    from icon_bench.errors import UnknownNameError
    from icon_bench.hooks.registry import get_registry

    registry = get_registry()
    if written is None:  # every registered component declared for this side and task
        names = sorted(registry.components[_kind(side)])
        return [Choice(side, n, _params(declared(side, n, task) or {}, ("discover", "space", side, n)))
                for n in names if declared(side, n, task) is not None]
    if not isinstance(written, list) or not written:
        raise SpaceError(("discover", "space", side), "a list of component names (or {name: {param: range}})")
    out = []
    for i, entry in enumerate(written):
        loc = ("discover", "space", side, i)
        name, ranges = None, None
        if isinstance(entry, str):
            name = entry
        elif isinstance(entry, Mapping) and len(entry) == 1:
            (name, ranges), = entry.items()
        if name is None or not (ranges is None or isinstance(ranges, Mapping)):
            raise SpaceError(loc, f"expected a name or {{name: {{param: range}}}}, got {entry!r}")
        try:
            name = registry.get(_kind(side), name).name
        except UnknownNameError as exc:
            raise SpaceError(loc, str(exc)) from None
        decl = declared(side, name, task)
        if ranges is None and decl is None:
            raise SpaceError(loc, f"{_kind(side)} {name!r} does not declare itself for {side} in {task} (its "
                             "`discovery` attribute); give its ranges as {" + name + ": {param: range}} to search it anyway")
        out.append(Choice(side, name, _params(ranges if ranges is not None else decl or {}, loc)))
    if not out:
        raise SpaceError(("discover", "space", side), f"no component declares itself for {side} in {task}")
    return out


@dataclasses.dataclass(frozen=True)
class Space:
    """The conditional space of one discover block: the sides' choices, then the other keys' ranges."""

    task: str
    sides: dict[str, tuple[Choice, ...]]
    extra: tuple[Param, ...]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Flat values drawn on an Optuna trial (define-by-run): "p", "p.k", "divergence", "divergence.a", "lr"."""
        values: dict[str, Any] = {}
        for side, choices in self.sides.items():
            by_name = {c.name: c for c in choices}
            name = trial.suggest_categorical(side, list(by_name)) if len(by_name) > 1 else next(iter(by_name))
            values[side] = name
            for param in by_name[name].params:
                values[f"{side}.{param.key}"] = _suggest(trial, f"{side}.{name}.{param.key}", param)
        for param in self.extra:
            values[param.key] = _suggest(trial, param.key, param)
        return _rounded(values)

    def distributions(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's names and distributions of the parameters a point drew (for rebuilding a study from rows)."""
        from icon_bench.extras import require

        od = require("optuna.distributions", "discover")
        out: dict[str, Any] = {}
        for side, choices in self.sides.items():
            by_name = {c.name: c for c in choices}
            if len(by_name) > 1:
                out[side] = od.CategoricalDistribution(list(by_name))
            for param in by_name[values[side]].params:
                out[f"{side}.{values[side]}.{param.key}"] = _distribution(od, param)
        for param in self.extra:
            out[param.key] = _distribution(od, param)
        return out

    def optuna_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A point's flat values under Optuna's names (the inverse of what suggest returns)."""
        out: dict[str, Any] = {}
        extra = {p.key for p in self.extra}
        for side, choices in self.sides.items():
            if len(choices) > 1:
                out[side] = values[side]
            out.update({f"{side}.{values[side]}.{k.split('.', 1)[1]}": v for k, v in values.items()
                        if k.startswith(side + ".") and k not in extra})
        out.update({p.key: values[p.key] for p in self.extra})
        return out

    def optuna_names(self) -> list[str]:
        """Every name a draw may use (the sides, each choice's parameters, the other keys)."""
        names = [side for side, choices in self.sides.items() if len(choices) > 1]
        names += [f"{side}.{c.name}.{p.key}" for side, choices in self.sides.items() for c in choices for p in c.params]
        return names + [p.key for p in self.extra]

    def values_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A point's flat values from Optuna's names (the inverse of optuna_params)."""
        values: dict[str, Any] = {}
        for side, choices in self.sides.items():
            by_name = {c.name: c for c in choices}
            name = params[side] if len(by_name) > 1 else next(iter(by_name))
            values[side] = name
            for param in by_name[name].params:
                values[f"{side}.{param.key}"] = params[f"{side}.{name}.{param.key}"]
        values.update({p.key: params[p.key] for p in self.extra})
        return _rounded(values)

    def cell(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Grid-cell keys of a point (Suite.cell_to_spec reads them): p.name, p.k, divergence, lr, ..."""
        cell: dict[str, Any] = {"p.name": values["p"], "q.name": values["q"]}
        div: dict[str, Any] = {"name": values["divergence"]}
        for key, value in values.items():
            side, _, rest = key.partition(".")
            if side == "divergence" and rest:
                div[rest] = value
            elif side in ("p", "q") and rest:
                cell[key] = value
            elif side not in SIDES:
                cell[key] = value
        cell["divergence"] = div if len(div) > 1 else div["name"]
        return cell

    def fingerprint(self) -> dict[str, Any]:
        return {"task": self.task, **{s: [c.describe() for c in cs] for s, cs in self.sides.items()},
                **{p.key: p.describe() for p in self.extra}}


def loss_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """A point as its loss: {"p": {name, params}, "q": {...}, "divergence": {...}, other keys as they are}."""
    loss: dict[str, Any] = {side: {"name": values[side]} for side in SIDES}
    for key, value in values.items():
        side, _, rest = key.partition(".")
        if side in SIDES and rest:
            loss[side][rest] = value
        elif side not in SIDES:
            loss[key] = value
    return loss


def loss_name(values: Mapping[str, Any]) -> str:
    """A stable name a user can cite: icon- and 8 hex digits of the loss's canonical JSON (rounded to 4 digits)."""
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
    return "icon-" + hashlib.sha256(canonical_json(rounded).encode()).hexdigest()[:8]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Drawn floats to 4 significant digits: what trains, is stored and is printed is one readable number
    (a loss's formula, snippet and name), far finer than any difference a search can resolve."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def _suggest(trial: Any, name: str, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(name, list(param.values))
    low, high = param.values
    if param.kind == "randint":
        return trial.suggest_int(name, int(low), int(high))
    return trial.suggest_float(name, float(low), float(high), log=param.kind == "loguniform")


def _distribution(od: Any, param: Param) -> Any:
    if param.kind == "choice":
        return od.CategoricalDistribution(list(param.values))
    low, high = param.values
    if param.kind == "randint":
        return od.IntDistribution(int(low), int(high))
    return od.FloatDistribution(float(low), float(high), log=param.kind == "loguniform")


def build_space(block: Discover) -> Space:
    """The block's space; SpaceError (with the key path) when a name, a declaration or a range is wrong."""
    written = dict(block.space)
    sides = {side: tuple(_choices(side, written.pop(side, None), block.task)) for side in SIDES}
    extra_written = {**DEFAULT_EXTRA, **written}
    extra = _params({k: v for k, v in extra_written.items() if v is not None}, ("discover", "space"))
    for param in extra:
        if param.key.split(".", 1)[0] in ("method", "dataset", "seed", "split", "divergence"):
            raise SpaceError(("discover", "space", param.key), "names a configuration, not a hyperparameter")
    return Space(block.task, sides, extra)
