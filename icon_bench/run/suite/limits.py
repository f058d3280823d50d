"""Bounds on what a suite may ask for, in a module light enough for the CLI's argument defaults."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = ["DEFAULT_TIMEOUT", "MAX_CELLS", "apply_limits", "limits_environment", "memory_size"]

#: Cells a suite may expand to unless the run raises the limit (`icon-bench run --max-cells N`):
#: counted from the axes before anything is expanded; 10 000 cells expand in about 0.2 s.
MAX_CELLS = 10_000

#: Seconds a trial may run unless the suite's `timeout:` or `--timeout` says otherwise: generous (a day),
#: so that it only ever stops a trial that hung, never a slow one that was going to finish.
DEFAULT_TIMEOUT = 86_400

#: Where a run's limits travel to the loaders and trials, here and in the Ray workers it starts
#: (data/headers.MEMORY_ENV and run/execution.TIMEOUT_ENV name the same variables).
_MEMORY_ENV = "ICON_BENCH_MAX_MEMORY"
_TIMEOUT_ENV = "ICON_BENCH_TIMEOUT"


def memory_size(text: str) -> int:
    """`--max-memory`'s argument type: bytes from 64G, 512M, 2000000000."""
    from icon_bench.data.headers import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextlib.contextmanager
def limits_environment() -> Iterator[None]:
    """Restore the limit variables afterwards: one run's limits never leak into the next (tests run many)."""
    saved = {name: os.environ.get(name) for name in (_MEMORY_ENV, _TIMEOUT_ENV)}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def apply_limits(max_memory: int | None, timeout: float | None) -> None:
    """Put a run's memory bound (bytes) and trial time limit (seconds) where its loaders and trials read them."""
    from icon_bench.errors import IconBenchError

    if max_memory is not None:
        os.environ[_MEMORY_ENV] = str(int(max_memory))
    if timeout is not None:
        if not timeout > 0:
            raise IconBenchError(f"--timeout: seconds above 0, got {timeout:g}")
        os.environ[_TIMEOUT_ENV] = str(timeout)
