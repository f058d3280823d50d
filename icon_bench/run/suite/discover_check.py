"""Load-time checks of a `discover:` block: the space's names and ranges, the seeds, baselines and metric."""

from __future__ import annotations

from typing import Any

from icon_bench.run.suite.discover_space import SpaceError, build_space

__all__ = ["check_discover"]


def check_discover(suite: Any, errors: Any) -> None:
    """Every problem of the block as file:line: key: message (the suite's error collector `errors`)."""
    from icon_bench.extras import available, missing_message

    block = suite.discover
    if "method" in suite.grid or suite.include or suite.tune is not None:
        errors.add(("discover",), "a discover suite searches its own losses: drop grid.method, include and tune "
                   "(the base recipe is discover.base)")
    if not available("optuna"):
        errors.add(("discover",), missing_message("loss discovery (TPE)", "optuna"))
    try:
        build_space(block)
    except SpaceError as exc:
        errors.add(exc.loc, str(exc))
    seeds = list(suite._seeds())
    if len(seeds) != 1:
        errors.add(("seeds",), f"a discover suite searches at one seed (the confirmation has its own), got {len(seeds)}")
    fresh = block.confirm.seed_list()
    reused = sorted(set(fresh) & set(int(s) for s in seeds))
    if reused:
        errors.add(("discover", "confirm", "seeds"), f"seed(s) {reused} are search seeds; confirmation needs fresh ones")
    if len(set(fresh)) != len(fresh) or not fresh:
        errors.add(("discover", "confirm", "seeds"), "confirmation seeds must be distinct (at least one)")
    _check_names(block, errors)


def _check_names(block: Any, errors: Any) -> None:
    from icon_bench.errors import UnknownNameError
    from icon_bench.hooks.registry import get_registry

    registry = get_registry()
    for loc, kind, name in [(("discover", "base"), "method", block.base_method()),
                            *[(("discover", "baselines", i), "method", m) for i, m in enumerate(block.baseline_methods())],
                            (("discover", "metric"), "metric", block.selection_metric())]:
        try:
            registry.get(kind, name)
        except UnknownNameError as exc:
            errors.add(loc, str(exc))
