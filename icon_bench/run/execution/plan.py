"""A run's plan: the cells of a suite against what the store holds; which run, which are stale."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from icon_bench.errors import IconBenchError
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.model import Suite

__all__ = ["Plan", "make_plan", "one_cell_per_configuration", "one_seed_note", "seed_independent", "stale_note"]


@dataclasses.dataclass
class Plan:
    """The cells of a suite against what the store already holds."""

    specs: list[dict[str, Any]]  # every cell, in suite order
    ids: list[str]
    status: dict[str, str]  # trial_id -> status of its latest stored row (only cells of this suite)
    to_run: list[dict[str, Any]]
    # trial_id -> how its ok row's recipe differs from what the cell runs now (those cells rerun)
    stale: dict[str, str] = dataclasses.field(default_factory=dict)
    # trial_id of a seed-independent cell -> the seeds of the suite it stands for but does not run
    one_seed: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(1 for t in self.ids if self.status.get(t) == "ok" and t not in self.stale)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.ids if t in self.status and self.status[t] != "ok")


def make_plan(
    suite: Suite, store: ResultsStore, *, force: bool = False, retry_failed: bool = False, limit: int | None = None
) -> Plan:
    """Which cells run: not yet ok (default), all (force), or only failed ones (retry_failed); at most `limit`."""
    specs, one_seed = one_cell_per_configuration(suite.trials())
    ids = [trial_id(s) for s in specs]
    latest = {r["trial_id"]: r for r in store.rows()}
    status = {t: str(latest[t].get("status")) for t in ids if t in latest}
    stale = {} if force or retry_failed else _stale_cells(specs, ids, latest)
    if force:
        chosen = list(specs)
    elif retry_failed:
        chosen = [s for s, t in zip(specs, ids) if t in status and status[t] != "ok"]
    else:
        chosen = [s for s, t in zip(specs, ids) if status.get(t) != "ok" or t in stale]
    if limit is not None:
        if limit < 0:
            raise IconBenchError(f"--limit must be >= 0, got {limit}")
        chosen = chosen[:limit]
    return Plan(specs=specs, ids=ids, status=status, to_run=chosen, stale=stale, one_seed=one_seed)


def one_cell_per_configuration(
    specs: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The cells to run: a seed-independent configuration (its recipe says the seed cannot change
    its result, e.g. t-SNE) keeps only its first seed. Returns the cells and, per kept cell's
    trial_id, the other seeds it stands for; the row records seed_independent and the report n = 1.
    """
    from icon_bench.run.suite.ids import config_id

    kept: list[dict[str, Any]] = []
    first: dict[str, str] = {}  # config_id -> trial_id of the cell that runs
    skipped: dict[str, list[Any]] = {}
    independent: dict[str, bool] = {}
    for spec in specs:
        cid = config_id(spec)
        if cid not in independent:
            independent[cid] = seed_independent(spec)
        if not independent[cid]:
            kept.append(spec)
        elif cid in first:
            skipped[first[cid]].append(spec["seed"])
        else:
            first[cid] = trial_id(spec)
            skipped[first[cid]] = []
            kept.append(spec)
    return kept, {tid: seeds for tid, seeds in skipped.items() if seeds}


def _stale_cells(
    specs: Sequence[Mapping[str, Any]], ids: Sequence[str], latest: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Done cells whose row was made under another recipe than the cell runs now -> what changed.

    A row's recipe is the method's defaults with the cell's overrides; when a new icon-bench (or
    plugin) changes a default, the stored number no longer measures the configuration its label
    names, so the cell runs again. Rows that recorded no recipe are trusted.
    """
    from icon_bench.run.execution.trial import recipe_of

    stale: dict[str, str] = {}
    for spec, tid in zip(specs, ids):
        row = latest.get(tid)
        if row is None or row.get("status") != "ok":
            continue
        before = row.get("recipe") or (row.get("info") or {}).get("recipe")
        now = recipe_of(spec) if isinstance(before, Mapping) else None
        if isinstance(now, Mapping) and before != now:
            key = next(k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
            stale[tid] = f"{spec['method']}: {key} {before.get(key)!r} -> {now.get(key)!r}"
    return stale


def stale_note(plan: Plan) -> str:
    """One line saying how many done cells run again because their recipe changed, with an example."""
    first = next(iter(plan.stale.values()))
    return (
        f"note: {len(plan.stale)} done cell(s) ran under other recipe defaults than this icon-bench's "
        f"and run again (e.g. {first})"
    )


def seed_independent(spec: Mapping[str, Any]) -> bool:
    """Whether the (normalised) spec's result cannot depend on its seed (its recipe says so); False
    when the method cannot be built here, so such a cell runs every seed and reports its own error."""
    from icon_bench.hooks.registry import get_registry

    try:
        recipe = get_registry().get("method", spec["method"]).create().with_overrides(spec)
    except Exception:  # an unknown or broken method: the trial itself reports it when run
        return False
    return bool(getattr(recipe, "seed_independent", False))  # methods that say nothing depend on it


def one_seed_note(plan: Plan) -> str:
    """One line naming the seed-independent methods, their configurations and the seeds not run."""
    configs: dict[str, int] = {}
    skipped: dict[str, set[Any]] = {}
    for spec, tid in zip(plan.specs, plan.ids):
        if tid in plan.one_seed:
            method = str(spec["method"])
            configs[method] = configs.get(method, 0) + 1
            skipped.setdefault(method, set()).update(plan.one_seed[tid])
    parts = []
    for method, count in configs.items():
        seeds = sorted(skipped[method], key=str)
        parts.append(
            f"{method}: {count} configuration{'s' if count > 1 else ''} "
            f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} skipped)"
        )
    return (
        "note: these do not depend on the seed, so they run once per configuration and the report "
        "shows n = 1: " + "; ".join(parts)
    )
