"""Published reference numbers: `Reference`, the shipped sets (published.yaml), their hook, matching, `icon-bench references`."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icon_bench.errors import IconBenchError
from icon_bench.hooks.specs import hookimpl

__all__ = ["Reference", "add_commands", "load_references", "matching", "reference_rows"]

SHIPPED_FILE = "published.yaml"


class Reference(BaseModel):
    """One published figure: which paper and table, on what data and setting, for which method, what value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)  # the dataset label a measured table must have to show it
    paper: str = Field(min_length=1)
    arxiv: str | None = Field(None, pattern=r"^\d{4}\.\d{4,5}(v\d+)?$")
    table: str | None = None  # None: the table number was not verified
    dataset: str = Field(min_length=1)  # as the paper names it, e.g. "ImageNet-1K"
    setting: dict[str, Any] = Field(default_factory=dict)  # backbone, epochs, batch_size, ...
    method: str = Field(min_length=1)  # the icon-bench method name where one exists
    divergence: str | None = None
    metric: str = Field(min_length=1)  # an icon-bench metric name: hungarian, knn, linear_probe, ...
    value: float  # as published: accuracies in percent
    pm: float | None = Field(None, ge=0)  # the +- where the paper gives one
    source: str = ""  # where the figure was read, and what was not verified
    origin: str = ""  # "<set> (<distribution>)": filled in when loaded from the registry

    def value_text(self) -> str:
        """`64.75` or `64.75 ± 0.18`, as published."""
        # repr keeps the printed digits of a YAML number (58.0 stays 58.0, 64.75 stays 64.75).
        return repr(self.value) + (f" ± {self.pm!r}" if self.pm is not None else "")

    def label(self) -> str:
        """`debiased_infonce_clustering · kl · DINO ViT-B/14`: what tells this row from its neighbours."""
        parts = [self.method, *([self.divergence] if self.divergence else [])]
        if self.setting.get("backbone"):
            parts.append(str(self.setting["backbone"]))
        return " · ".join(parts)

    def citation(self) -> str:
        """`I-Con: ... (arXiv 2504.16929, Table 1)`."""
        where = ", ".join(x for x in (f"arXiv {self.arxiv}" if self.arxiv else "", self.table or "") if x)
        return f"{self.paper} ({where})" if where else self.paper


# ----------------------------------------------------------------------------------------------
# The shipped sets and the registry
# ----------------------------------------------------------------------------------------------
def _shipped_sets() -> dict[str, dict[str, Any]]:
    import yaml

    text = resources.files("icon_bench.report").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    sets = data.get("sets") if isinstance(data, Mapping) else None
    if not isinstance(sets, Mapping):
        raise IconBenchError(f"{SHIPPED_FILE}: expected a mapping 'sets: {{name: {{..., entries: [...]}}}}'")
    return {str(name): dict(body) for name, body in sets.items()}


def _entries_of(body: Mapping[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    """A set's factory: its entries, each with the set's shared fields filled in."""
    shared = {k: v for k, v in body.items() if k != "entries"}

    def factory() -> list[dict[str, Any]]:
        return [{**shared, **dict(entry)} for entry in body.get("entries") or []]

    return factory


@hookimpl
def register_references(register: Callable[..., None]) -> None:
    for name, body in _shipped_sets().items():
        register(name, _entries_of(body), description=f"{body.get('dataset', '?')}: {body.get('paper', name)}")


def validate_entries(entries: Any, where: str) -> list[Reference]:
    """`entries` (Reference objects or dicts of their fields) as References; errors name `where` and the entry."""
    if isinstance(entries, (Mapping, Reference)) or not isinstance(entries, Iterable):
        raise IconBenchError(f"{where}: the factory must return a list of references, got {type(entries).__name__}")
    out: list[Reference] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Reference):
            out.append(entry)
            continue
        try:
            out.append(Reference.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(map(str, first["loc"])) or "entry"
            raise IconBenchError(f"{where}: entry {i}: {field}: {first['msg']} (got {first.get('input')!r})") from None
    return out


def load_references(registry: Any = None, *, strict: bool = False) -> list[Reference]:
    """Every registered reference set's entries, validated, each with its `origin` filled in.

    A set that fails (its factory raises, an entry is malformed) is skipped with a warning naming
    the set and its plugin, so one bad plugin never takes a report down; `strict` raises instead.
    """
    from icon_bench.hooks.registry import get_registry

    reg = registry or get_registry()
    out: list[Reference] = []
    for name in reg.names("reference"):
        comp = reg.get("reference", name)
        where = f"reference set {name!r} ({comp.distribution})"
        try:
            entries = validate_entries(comp.create(), where)
        except Exception as exc:  # noqa: BLE001 - a plugin's factory may raise anything
            message = str(exc) if isinstance(exc, IconBenchError) else f"{where}: {type(exc).__name__}: {exc}"
            if strict:
                raise IconBenchError(message) from None
            warnings.warn(f"skipping {message}", stacklevel=2)
            continue
        out += [e.model_copy(update={"origin": f"{name} ({comp.distribution})"}) for e in entries]
    return out


def matching(references: Iterable[Reference], dataset: str, metrics: Iterable[str]) -> list[Reference]:
    """The references a table of `dataset` (its label) reporting `metrics` shows."""
    wanted = set(metrics)
    return [r for r in references if r.key == dataset and r.metric in wanted]


def reference_rows(references: Iterable[Reference], metrics: list[str]) -> list[dict[str, Any]]:
    """One display row per (paper, table, method, divergence, setting): its label, citation and value per metric."""
    rows: dict[str, dict[str, Any]] = {}
    for ref in references:
        ident = json.dumps([ref.paper, ref.table, ref.method, ref.divergence, ref.setting], sort_keys=True, default=str)
        row = rows.setdefault(
            ident, {"label": ref.label(), "citation": ref.citation(), "source": ref.source, "values": {}}
        )
        row["values"][ref.metric] = ref.value_text()
    return [{**r, "cells": [r["values"].get(m, "–") for m in metrics]} for r in rows.values()]


# ----------------------------------------------------------------------------------------------
# icon-bench references
# ----------------------------------------------------------------------------------------------
def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `icon-bench references`."""
    p = subparsers.add_parser(
        "references",
        help="list the published reference numbers reports show beside measured rows",
        description="List published results (shipped with icon-bench and added by plugins). A report shows "
        "an entry beside a measured table when the table's dataset label equals the entry's key: give the "
        "suite's dataset entry `label: <key>`.",
    )
    p.add_argument("--key", help="only entries for this dataset key (e.g. imagenet1k-dinov2-vitb14)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--sources", action="store_true", help="also print each set's source notes")
    p.set_defaults(func=cmd_references)


def cmd_references(args: argparse.Namespace) -> int:
    """Handler of `icon-bench references`."""
    from tabulate import tabulate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refs = load_references()
    for w in caught:
        print(f"icon-bench: warning: {w.message}", file=sys.stderr)
    if args.key:
        keys = sorted({r.key for r in refs})
        refs = [r for r in refs if r.key == args.key]
        if not refs:
            from icon_bench.errors import UnknownNameError

            raise UnknownNameError("reference key", args.key, keys)
    if args.json:
        print(json.dumps([r.model_dump() for r in refs], indent=2))
        return 1 if caught else 0
    table = [
        [r.key, r.method, r.divergence or "–", r.metric, r.value_text(), _setting_text(r.setting), r.dataset,
         f"arXiv {r.arxiv}" if r.arxiv else "–", r.table or "–", r.origin]
        for r in refs
    ]
    headers = ["key", "method", "divergence", "metric", "value", "setting", "dataset", "paper", "table", "set"]
    print(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True))
    if args.sources:
        for origin, source in dict.fromkeys((r.origin, r.source) for r in refs):
            print(f"\n{origin}: {source}")
    print(f"\n{len(refs)} published figure(s); values as printed in each paper (accuracies in percent).")
    return 1 if caught else 0


def _setting_text(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "–"
