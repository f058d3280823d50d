"""SIGTERM handled as Ctrl-C by `icon-bench run`: the trials stop, finished rows are kept, the summary is printed."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "interrupted", "reclaim_sigterm", "stops_on_sigterm"]

#: Exit statuses of an interrupted run: Ctrl-C (SIGINT) 130, SIGTERM 143 (128 + the signal, the shells' convention).
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

#: Which signal ended the run, set by the SIGTERM handler (None: none, or Ctrl-C).
_SIGNAL: dict[str, str | None] = {"by": None}
#: The handler while a run is on (ray.init replaces it with its own, which exits without a summary).
_HANDLER: list[Callable[[int, Any], None]] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    _SIGNAL["by"] = "SIGTERM"
    raise KeyboardInterrupt


def reclaim_sigterm() -> None:
    """Put the run's SIGTERM handler back after a library (ray.init) installed its own."""
    if _HANDLER and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _HANDLER[-1])


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, a batch system's time limit) raises KeyboardInterrupt, as Ctrl-C does, for the body."""
    _SIGNAL["by"] = None
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _HANDLER.append(_on_sigterm)
    try:
        yield
    finally:
        _HANDLER.pop()
        signal.signal(signal.SIGTERM, previous)


def interrupted(out: TextIO) -> int:
    """Say the run was interrupted (and by what) -> 130 for Ctrl-C, 143 for SIGTERM."""
    by = _SIGNAL["by"]
    print(f"interrupted{' by ' + by if by else ''}: finished rows are kept; run the same command again to resume", file=out)
    return EXIT_TERMINATED if by else EXIT_INTERRUPTED


def stops_on_sigterm(run: Callable[..., int]) -> Callable[..., int]:
    """`run` with SIGTERM handled as Ctrl-C; a SIGTERM before any trial ran exits 143 with a message."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        with _sigterm_as_ctrl_c():
            try:
                return run(*args, **kwargs)
            except KeyboardInterrupt:
                if _SIGNAL["by"] is None:
                    raise
                print(f"icon-bench: interrupted by {_SIGNAL['by']} before a trial ran", file=sys.stderr)
                return EXIT_TERMINATED

    return wrapper
