"""What every executor shares: the run summary, one trial into one row, failed rows, recording."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from icon_bench.data.options import dataset_label
from icon_bench.errors import StoreError
from icon_bench.run.execution.deadline import TIMEOUT_STATUS, TrialTimeout, deadline
from icon_bench.run.suite.ids import canonical_json, config_id, trial_id
from icon_bench.run.execution.progress import OK_STATUSES, Progress
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.model import resolve_dataset_paths

__all__ = ["TIMEOUT_ENV", "Executor", "RunSummary", "failed_row", "run_one", "timeout_row", "trial_timeout"]


TrialFn = Callable[..., dict]
LoadFn = Callable[[dict], Any]


@dataclasses.dataclass
class RunSummary:
    """What one executor run did: counts, the rows it stored, and whether it was interrupted or its store failed."""

    total: int
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    elapsed_s: float = 0.0
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Why the store could not take a row; the run stopped there (None: every row is in the store).
    store_error: str | None = None
    #: A results store of the same format holding the rows the store refused, and how many.
    fallback: str | None = None
    rescued: int = 0
    #: Rows that not even the fallback could take (the runner prints them).
    unsaved: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def not_run(self) -> int:
        """Trials that never finished (cancelled by an interrupt or a store failure)."""
        return self.total - self.ok - self.failed


class Executor(Protocol):
    """The interface both executors share."""

    def run(
        self,
        specs: Sequence[Mapping[str, Any]],
        store: ResultsStore,
        trial_fn: TrialFn | None = None,
        load_fn: LoadFn | None = None,
    ) -> RunSummary: ...


# ---------------------------------------------------------------------------------------------
# Pieces shared by both executors (and run inside Ray workers)
# ---------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _default_trial_fn() -> TrialFn:
    from icon_bench.run.execution.trial import run_trial  # lazy: the trial stack pulls in torch

    return run_trial


def _default_load_fn() -> LoadFn:
    from icon_bench.data.load import load_dataset

    return load_dataset


def _name(value: Any) -> Any:
    return value.get("name") if isinstance(value, Mapping) else value


def failed_row(spec: Mapping[str, Any], error: str, tb: str | None = None, started_at: str | None = None) -> dict[str, Any]:
    """A result row for a trial that did not produce one of its own (it raised, its worker died, ...)."""
    from icon_bench.run.execution.trial import protocol_of  # lazy: the trial stack pulls in torch

    spec = dict(spec)
    return {
        "trial_id": trial_id(spec),
        "config_id": config_id(spec),
        "spec": spec,
        "method": spec.get("method"),
        "dataset": _name(spec.get("dataset")),
        "divergence": _name(spec.get("divergence")),
        "seed": spec.get("seed"),
        "split": spec.get("split") or "test",
        "dataset_label": dataset_label(spec.get("dataset")),
        "status": "failed",
        "metrics": {},
        "protocol": protocol_of(spec) or {},
        "hostname": socket.gethostname(),
        "started_at": started_at or _now(),
        "finished_at": _now(),
        "error": error,
        "traceback": tb,
        "artifacts": None,
    }


#: The time limit of this run's trials in seconds (`icon-bench run` sets it from --timeout or the
#: suite's `timeout:`): read where a trial runs, so the search paths and the Ray workers of a cluster
#: this run started (which inherit its environment) apply it without passing it along.
TIMEOUT_ENV = "ICON_BENCH_TIMEOUT"  # also named in run/suite/limits.py, which sets it


def trial_timeout() -> float:
    """Seconds a trial may run: $ICON_BENCH_TIMEOUT, else DEFAULT_TIMEOUT (a day)."""
    from icon_bench.run.suite.limits import DEFAULT_TIMEOUT

    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return float(DEFAULT_TIMEOUT)
    return value if value > 0 else float(DEFAULT_TIMEOUT)


def timeout_row(spec: Mapping[str, Any], error: str, started_at: str | None = None) -> dict[str, Any]:
    """The row of a trial stopped by its time limit: failed, with status "timeout" (--retry-failed reruns it)."""
    row = failed_row(spec, error, None, started_at)
    row["status"] = TIMEOUT_STATUS
    return row


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch CPU threads (the suite's `cpus`), restoring the previous count."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_for(cpus: float) -> int:
    """Torch threads for a trial given `cpus`: a trial never oversubscribes the cores it was given."""
    return max(1, int(cpus))


def run_one(
    spec: Mapping[str, Any],
    data: Any,
    trial_fn: TrialFn | None = None,
    threads: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run one trial; an exception becomes a failed row (error + traceback) instead of propagating.

    A trial still running after `timeout` seconds is stopped (run/execution/deadline.py) and becomes a failed
    row with status "timeout".
    """
    started = _now()
    t0 = time.perf_counter()
    try:
        fn = trial_fn or _default_trial_fn()
        with _torch_threads(threads), deadline(timeout if timeout is not None else trial_timeout()):
            row = fn(dict(spec), data)
        if not isinstance(row, Mapping):
            raise TypeError(f"the trial function returned {type(row).__name__}, not a result row (dict)")
        row = dict(row)
    except TrialTimeout as exc:
        row = timeout_row(spec, str(exc), started)
        row["timings"] = {"total_s": time.perf_counter() - t0}
        return row
    except Exception as exc:  # KeyboardInterrupt / SystemExit still stop the run
        row = failed_row(spec, f"{type(exc).__name__}: {exc}", traceback.format_exc(), started)
        row["timings"] = {"total_s": time.perf_counter() - t0}
        return row
    # Rows from a trial function that leaves out the bookkeeping still resume correctly.
    row.setdefault("trial_id", trial_id(spec))
    row.setdefault("config_id", config_id(spec))
    row.setdefault("spec", dict(spec))
    row.setdefault("status", "ok")
    return row


def _dataset_key(spec: Mapping[str, Any], base: str) -> tuple[str, dict[str, Any]]:
    ds = spec.get("dataset")
    ds = {"name": ds} if isinstance(ds, str) else dict(ds or {})
    resolved = resolve_dataset_paths(ds, base)
    return canonical_json(resolved), resolved


def _record(store: ResultsStore, row: dict[str, Any], summary: RunSummary, progress: Progress) -> None:
    """Store one finished row. Once the store fails, this and later rows go to a fallback store and
    the executor stops: nothing already computed is lost, and no more is computed that could be."""
    stored: dict[str, Any] | None = None
    if summary.store_error is None:
        try:
            stored = store.append(row)
        except StoreError as exc:
            summary.store_error = str(exc)
    if stored is None:
        stored = _rescue(store, row, summary)
    summary.rows.append(stored)
    if stored.get("status") in OK_STATUSES:
        summary.ok += 1
    else:
        summary.failed += 1
    progress.finish(stored)


def _rescue(store: ResultsStore, row: dict[str, Any], summary: RunSummary) -> dict[str, Any]:
    """Keep a row the store refused: in a fallback store named in the run's message, else in memory."""
    try:
        if summary.fallback is None:
            summary.fallback = _fallback_dir(store.suite)
        fallback = ResultsStore(summary.fallback, suite=store.suite, run_id=store.run_id, rerun=store.rerun)
        fallback.reruns = store.reruns  # a rescued rerun stays marked as one
        stored = fallback.append(row)
        summary.rescued += 1
        return stored
    except (OSError, StoreError):
        summary.unsaved.append(row)
        return {k: v for k, v in row.items() if k != "artifacts"}


def _fallback_dir(suite: str | None) -> str:
    """A new folder for rescued rows: in the system's temporary folder, else the home folder."""
    last: OSError | None = None
    for parent in (None, os.path.expanduser("~")):
        try:
            return tempfile.mkdtemp(prefix=f"icon-bench-unsaved-{suite or 'rows'}-", dir=parent)
        except OSError as exc:
            last = exc
    assert last is not None
    raise last
