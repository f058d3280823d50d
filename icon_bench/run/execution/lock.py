"""A lock on a results folder: one run writes it at a time; a second refuses (naming the first) or waits."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from icon_bench.errors import IconBenchError, StoreError

__all__ = ["LOCK_FILE", "RunLocked", "holder", "is_locked", "results_lock"]

#: The lock itself (an OS lock on this file: released when its process ends, however it ends).
LOCK_FILE = ".lock"
#: Who holds it: pid, host, start time and command line, for the message a second run prints.
OWNER_FILE = ".lock.json"


class RunLocked(IconBenchError):
    """Another run holds the lock on this results folder."""


def _lock(directory: Path) -> FileLock:
    # No soft (file-exists) fallback: a crashed run would leave such a lock held for ever.
    return FileLock(directory / LOCK_FILE, fallback_to_soft=False, thread_local=False)


def holder(directory: str | os.PathLike[str]) -> str:
    """'pid 123 on host, since 2026-01-01T00:00:00+00:00: icon-bench run ...', or '' when unknown."""
    try:
        info = json.loads((Path(directory) / OWNER_FILE).read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def is_locked(directory: str | os.PathLike[str]) -> bool:
    """Whether another run holds the folder now (False when the folder does not exist)."""
    directory = Path(directory)
    if not (directory / LOCK_FILE).exists():
        return False
    lock = _lock(directory)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # cannot even open it: not ours to judge here; the run reports the store error
        return False
    lock.release()
    return False


@contextlib.contextmanager
def results_lock(
    directory: str | os.PathLike[str], *, wait: bool = False, on_wait: Callable[[str], Any] | None = None
) -> Iterator[None]:
    """Hold the lock on `directory` (created if missing) for the body.

    Held by another run: raise RunLocked naming it, or with `wait`, call ``on_wait(holder)`` once and
    block until it ends.
    """
    directory = Path(directory)
    lock = _lock(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = holder(directory)
            if not wait:
                raise RunLocked(
                    f"another run is writing {directory} ({who or 'its owner is unknown'}); run again when it "
                    "ends, or with --wait to start then (it runs only what is still to do), or give this run "
                    "its own folder with --results DIR"
                ) from None
            if on_wait is not None:
                on_wait(who)
            lock.acquire()
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["icon-bench", *sys.argv[1:]]) if sys.argv else "icon-bench",
        }
        (directory / OWNER_FILE).write_text(json.dumps(owner) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot lock the results store: {exc.filename or directory}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
