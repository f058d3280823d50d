"""The Ray executor: each trial a Ray task with the suite's resources; datasets load once per cluster."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from icon_bench.errors import IconBenchError
from icon_bench.run.execution.base import (
    LoadFn,
    RunSummary,
    TrialFn,
    _dataset_key,
    _default_load_fn,
    _name,
    _record,
    failed_row,
    run_one,
    threads_for,
    timeout_row,
    trial_timeout,
)
from icon_bench.run.execution.interrupts import reclaim_sigterm
from icon_bench.run.execution.progress import Progress
from icon_bench.run.execution.ray_cluster import ray_session
from icon_bench.run.execution.store import ResultsStore

__all__ = ["RayExecutor"]


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def _import_trial_stack(attempts: int = 3) -> None:
    """Import torch and the trial stack in a Ray worker, retrying a torn concurrent import.

    Ray's own threads may import torch (its tensor serialisers) while a task does; torch.optim's
    __init__ is not safe against that and can fail once with a NameError (seen as "name
    'adadelta' is not defined") or an AttributeError ("partially initialized module 'torch' has no
    attribute 'fx'"). A failed import leaves nothing in sys.modules, so a retry after the other
    thread finished is clean.
    """
    for attempt in range(attempts):
        try:
            # Named one by one: the package imports lazily (a light `icon-bench --help`), so
            # importing run.trial alone no longer brings torch in before a task needs it.
            import torch  # noqa: F401
            import torch.fx  # noqa: F401
            import torch.optim  # noqa: F401

            import icon_bench.data.load  # noqa: F401
            import icon_bench.evaluation.evaluator  # noqa: F401
            import icon_bench.run.execution.trial  # noqa: F401
            import icon_bench.train.learn  # noqa: F401

            return
        except (NameError, AttributeError):  # a torn import: "partially initialized module 'torch'"
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def _ray_load(load_fn: LoadFn | None, ds_spec: dict[str, Any]) -> Any:
    # Runs in a Ray worker: the result stays in the object store and is never fetched by the driver.
    _import_trial_stack()
    return (load_fn or _default_load_fn())(ds_spec)


def _ray_trial(
    trial_fn: TrialFn | None, spec: dict[str, Any], data: Any, threads: int | None = None, timeout: float | None = None
) -> dict[str, Any]:
    # `data` arrives resolved: Ray fetches the dataset object from the store because its ref is a
    # top-level argument of this task.
    _import_trial_stack()
    row = run_one(spec, data, trial_fn, threads, timeout)
    # The worker's priority: timings of trials starved by a niced worker can be told apart.
    row.setdefault("nice", os.nice(0))
    _release_cuda_cache()
    return row


def _release_cuda_cache() -> None:
    """Give a reused worker's cached CUDA memory back, so trials sharing the GPU can use it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _cancel(refs: Sequence[Any], force: bool = False) -> None:
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=force)
        except Exception:  # already finished or gone: nothing to cancel
            pass


class _Overdue:
    """Trials past their time limit plus a grace period, as the driver sees them (a backstop to run/execution/deadline.py).

    Ray starts tasks in submission order, so a task is taken to start when it is among the first
    `capacity` unfinished ones; the grace covers that guess and a worker's start.
    """

    GRACE_S = 60.0

    def __init__(self, timeout: float, capacity: int) -> None:
        self.timeout, self.capacity = timeout, max(1, capacity)
        self.since: dict[Any, float] = {}

    def check(self, pending: Sequence[Any]) -> list[Any]:
        now = time.monotonic()
        for ref in pending[: self.capacity]:
            self.since.setdefault(ref, now)
        return [ref for ref in pending[: self.capacity] if now - self.since[ref] > self.timeout + self.GRACE_S]

    def stop(self, pending: list[Any], by_ref: dict[Any, Mapping[str, Any]], record: Callable[[dict[str, Any]], None]) -> None:
        """Kill the overdue trials' workers, take them out of `pending` and record them as timed out.

        Past its limit plus the grace, a trial is stuck in a C call its own deadline (run/execution/deadline.py)
        cannot break.
        """
        message = (f"timed out after {self.timeout:g} s and did not stop within {self.GRACE_S:g} s more; "
                   "its Ray worker was killed")
        for ref in self.check(pending):
            _cancel([ref], force=True)
            pending.remove(ref)
            record(timeout_row(by_ref.pop(ref), message))


class RayExecutor:
    """Runs each trial as a Ray task with the suite's CPUs / (fractional) GPUs; datasets load once per cluster.

    Without `address` (and no Ray already initialised in this process) a local cluster starts with
    `num_cpus` / `num_gpus` (None: detected) on 127.0.0.1 only, its workers at this process's
    priority, without the dashboard unless `dashboard`; it is shut down afterwards.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus: float = 1.0,
        gpus: float = 0.0,
        max_retries: int = 2,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        progress: bool = True,
        log_to_driver: bool = False,
        poll_s: float = 1.0,
        dashboard: bool = False,
        base: str | os.PathLike[str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        if cpus < 0 or gpus < 0:
            raise IconBenchError(f"resources must be >= 0, got cpus={cpus}, gpus={gpus}")
        self.address = address
        self.cpus, self.gpus = float(cpus), float(gpus)
        self.max_retries = max_retries
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.progress = progress
        self.log_to_driver = log_to_driver
        self.poll_s = poll_s
        self.dashboard = dashboard
        self._warned_nice = False
        self.base = base  # what relative dataset paths are relative to (the suite's root); None: cwd
        self.out = out  # where "one line per finished trial" goes when stderr is not a terminal

    def _capacity(self) -> int:
        """How many trials can run at once; checks that one trial fits at all (else Ray waits forever)."""
        import ray

        res = ray.cluster_resources()
        have_cpu, have_gpu = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        if self.gpus > have_gpu:
            raise IconBenchError(
                f"each trial asks for {self.gpus:g} GPU(s) but the Ray cluster has {have_gpu:g}; "
                "set resources.gpus: 0 in the suite (or run on a machine with GPUs)"
            )
        if self.cpus > have_cpu:
            raise IconBenchError(
                f"each trial asks for {self.cpus:g} CPU(s) but the Ray cluster has {have_cpu:g}; lower resources.cpus"
            )
        limits = [have_cpu / self.cpus if self.cpus else math.inf, have_gpu / self.gpus if self.gpus else math.inf]
        cap = min(limits)
        return int(cap + 1e-9) if math.isfinite(cap) else 1 << 30

    def run(
        self,
        specs: Sequence[Mapping[str, Any]],
        store: ResultsStore,
        trial_fn: TrialFn | None = None,
        load_fn: LoadFn | None = None,
    ) -> RunSummary:
        t0 = time.perf_counter()
        summary = RunSummary(total=len(specs))
        if not specs:
            return summary
        cluster = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "dashboard": self.dashboard}
        try:
            with ray_session(self.address, log_to_driver=self.log_to_driver, **cluster):
                reclaim_sigterm()  # ray.init's handler would exit with no summary
                self._run(specs, store, summary, trial_fn, load_fn)
        finally:
            summary.elapsed_s = time.perf_counter() - t0
        return summary

    def _run(
        self,
        specs: Sequence[Mapping[str, Any]],
        store: ResultsStore,
        summary: RunSummary,
        trial_fn: TrialFn | None,
        load_fn: LoadFn | None,
    ) -> None:
        import ray
        from ray.exceptions import RayError

        progress: Progress | None = None
        pending: list[Any] = []
        try:
            capacity = self._capacity()
            timeout = trial_timeout()  # this run's limit, passed along: a joined cluster's workers lack our environment
            # Resolved here, on the driver: a worker on another machine has another working directory.
            base = os.fspath(self.base) if self.base is not None else os.getcwd()
            # max_calls=0: a worker runs any number of trials, so each pays the trial stack's imports
            # (torch, scikit-learn, torch._dynamo via the first Adam: 5-6 CPU s) once. Ray would
            # otherwise default GPU tasks to a fresh worker per call.
            load_task = ray.remote(max_calls=0)(_ray_load).options(
                num_cpus=min(self.cpus, 1.0), num_gpus=0, max_retries=self.max_retries, retry_exceptions=False
            )
            trial_task = ray.remote(max_calls=0)(_ray_trial).options(
                num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries, retry_exceptions=False
            )
            # Functions travel once through the object store rather than being pickled into each task.
            trial_fn_ref = ray.put(trial_fn) if trial_fn is not None else None
            load_fn_ref = ray.put(load_fn) if load_fn is not None else None
            data_refs: dict[str, Any] = {}
            by_ref: dict[Any, Mapping[str, Any]] = {}
            for spec in specs:
                key, ds_spec = _dataset_key(spec, base)
                if key not in data_refs:
                    data_refs[key] = load_task.remote(load_fn_ref, ds_spec)
                ref = trial_task.remote(trial_fn_ref, dict(spec), data_refs[key], threads_for(self.cpus), timeout)
                by_ref[ref] = spec
                pending.append(ref)
            # Pending tasks pin their arguments, so the driver can let go of the dataset refs now:
            # each dataset is freed from the object store once its last trial is done.
            data_refs.clear()
            progress = Progress(len(specs), enabled=self.progress, out=self.out)
            overdue = _Overdue(timeout, capacity)
            while pending:
                # Ray starts tasks in submission order, so the oldest unfinished one is running.
                progress.start(by_ref[pending[0]], running=min(capacity, len(pending)))
                try:
                    ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                    if ready and pending:
                        more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                        ready += more
                except (RayError, ConnectionError, OSError) as exc:
                    # The cluster itself is gone (its node died with its agents): every trial still
                    # pending is recorded failed, and the run goes on to its summary and report.
                    self._lost(pending, by_ref, exc, store, summary, progress)
                    pending = []
                    break
                overdue.stop(pending, by_ref, lambda row: _record(store, row, summary, progress))
                for ref in ready:
                    spec = by_ref.pop(ref)
                    try:
                        row = ray.get(ref)
                    except RayError as exc:
                        row = self._error_row(spec, exc, self.max_retries)
                    self._check_priority(row)
                    _record(store, row, summary, progress)
                if summary.store_error:  # the rows ready so far are in the fallback; stop the rest
                    _cancel(pending)
                    break
            progress.idle()
        except KeyboardInterrupt:
            summary.interrupted = True
            _cancel(pending)
        finally:
            if progress is not None:
                progress.close()

    def _lost(self, pending: Sequence[Any], by_ref: dict[Any, Mapping[str, Any]], exc: BaseException,
              store: ResultsStore, summary: RunSummary, progress: Progress) -> None:
        print(f"icon-bench: the Ray cluster was lost ({type(exc).__name__}: {exc}); "
              f"{len(pending)} unfinished trial(s) recorded as failed (--retry-failed reruns them)",
              file=sys.stderr, flush=True)
        for ref in pending:
            row = failed_row(by_ref.pop(ref), f"the Ray cluster was lost before the trial finished: {type(exc).__name__}: {exc}")
            _record(store, row, summary, progress)

    def _check_priority(self, row: Mapping[str, Any]) -> None:
        """Warn once when trials run at a lower priority than this driver (a cluster at Ray's nice 15)."""
        nice = row.get("nice")
        if self._warned_nice or not isinstance(nice, int) or nice <= os.nice(0):
            return
        self._warned_nice = True
        print(
            f"icon-bench: note: Ray workers run at nice {nice}, this driver at {os.nice(0)}: on a busy machine "
            "trials get CPU only when nothing else wants it; start the cluster with RAY_worker_niceness=0 "
            "(README, 'Running on Ray')",
            file=sys.stderr,
            flush=True,
        )

    @staticmethod
    def _error_row(spec: Mapping[str, Any], exc: BaseException, retries: int) -> dict[str, Any]:
        from ray.exceptions import RayTaskError, WorkerCrashedError

        if isinstance(exc, RayTaskError):
            # The trial task never raises (run_one catches), so this is its dataset load failing.
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            name = _name(spec.get("dataset"))
            return failed_row(spec, f"dataset {name!r} failed to load: {type(cause).__name__}: {cause}", str(exc))
        if isinstance(exc, WorkerCrashedError):
            return failed_row(spec, f"the trial's worker died ({retries} retries used up): {exc}", None)
        # Node lost, object lost, cancelled.
        return failed_row(spec, f"{type(exc).__name__}: {exc}", None)
