"""A trial's time limit, enforced inside the process that runs it (the local executor's, or a Ray worker's).

Why in process, not a subprocess per trial: a fresh process pays the trial stack's imports (torch,
scikit-learn: 5-6 CPU s) and a copy of the dataset for every trial, which would dominate the many
short trials of a sweep; the local executor also promises that breakpoints and debuggers work. So
the limit is a watchdog in the same process:
- on the main thread, a real-time interval timer (SIGALRM) whose handler raises TrialTimeout in the
  trial's Python code: it costs one system call per trial, and it also breaks a `time.sleep`,
  a blocking read or a loop waiting on a lock (the call is interrupted and the handler runs);
- on another thread, a timer thread raises TrialTimeout in the trial's thread
  (`PyThreadState_SetAsyncExc`), which takes effect at the next Python bytecode.
Both stop Python code, and code that returns to Python between C calls (a training loop: one torch op
at a time). What neither can stop is one C call that never returns (a deadlock inside a library);
under Ray the driver then cancels the task with its worker after a grace period
(run/execution/ray_executor.py), and locally the run cannot be freed without a process of its own.
TrialTimeout derives from BaseException, so a trial's own `except Exception` does not swallow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator

__all__ = ["TIMEOUT_STATUS", "TrialTimeout", "deadline"]

#: The status of a trial stopped by its time limit (a failed row: reports and --retry-failed treat it so).
TIMEOUT_STATUS = "timeout"


class TrialTimeout(BaseException):
    """Raised in a trial that ran past its time limit."""


def _message(seconds: float) -> str:
    return f"timed out after {seconds:g} s (the suite's `timeout`, or --timeout); the trial was stopped"


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in this thread if the block runs longer than `seconds` (None or <= 0: no limit)."""
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _alarm(seconds):
            yield
    else:
        with _async_raise(seconds):
            yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise TrialTimeout(_message(seconds))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _async_raise(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()  # the raise and the block's end never cross

    def fire() -> None:
        if done.wait(seconds):
            return
        with lock:
            if not done.is_set():
                exc = type("TrialTimeout", (TrialTimeout,), {"__init__": lambda self: TrialTimeout.__init__(self, _message(seconds))})
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(exc))

    watchdog = threading.Thread(target=fire, name="icon-bench-trial-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()
