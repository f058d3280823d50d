"""Executors: run trial specs in process (LocalExecutor) or as Ray tasks (RayExecutor), storing rows as they finish."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from icon_bench.errors import IconBenchError
from icon_bench.store import ResultsStore
from icon_bench.suite import canonical_json, config_id, resolve_dataset_paths, trial_id

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "RunSummary", "failed_row", "make_executor", "run_one"]

TrialFn = Callable[..., dict]
LoadFn = Callable[[dict], Any]


@dataclasses.dataclass
class RunSummary:
    """What one executor run did: counts, the rows it stored, and whether it was interrupted."""

    total: int
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    elapsed_s: float = 0.0
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def not_run(self) -> int:
        """Trials that never finished (cancelled by an interrupt)."""
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
    from icon_bench.trial import run_trial  # lazy: the trial stack pulls in torch

    return run_trial


def _default_load_fn() -> LoadFn:
    from icon_bench.data.load import load_dataset

    return load_dataset


def _name(value: Any) -> Any:
    return value.get("name") if isinstance(value, Mapping) else value


def failed_row(spec: Mapping[str, Any], error: str, tb: str | None = None, started_at: str | None = None) -> dict[str, Any]:
    """A result row for a trial that did not produce one of its own (it raised, its worker died, ...)."""
    spec = dict(spec)
    return {
        "trial_id": trial_id(spec),
        "config_id": config_id(spec),
        "spec": spec,
        "method": spec.get("method"),
        "dataset": _name(spec.get("dataset")),
        "divergence": _name(spec.get("divergence")),
        "seed": spec.get("seed"),
        "status": "failed",
        "metrics": {},
        "hostname": socket.gethostname(),
        "started_at": started_at or _now(),
        "finished_at": _now(),
        "error": error,
        "traceback": tb,
        "artifacts": None,
    }


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
    spec: Mapping[str, Any], data: Any, trial_fn: TrialFn | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Run one trial; an exception becomes a failed row (error + traceback) instead of propagating."""
    started = _now()
    t0 = time.perf_counter()
    try:
        fn = trial_fn or _default_trial_fn()
        with _torch_threads(threads):
            row = fn(dict(spec), data)
        if not isinstance(row, Mapping):
            raise TypeError(f"the trial function returned {type(row).__name__}, not a result row (dict)")
        row = dict(row)
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


class _Progress:
    """tqdm bar with ok / failed / running counts; tqdm's own estimate gives the time left."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        from tqdm.auto import tqdm

        # disable=None turns the bar off when stderr is not a terminal (logs, CI, tests).
        self.bar = tqdm(total=total, desc=desc, unit="trial", disable=None if enabled else True, dynamic_ncols=True)
        self.ok = self.failed = self.running = 0

    def update(self, row: Mapping[str, Any] | None = None, running: int | None = None) -> None:
        if running is not None:
            self.running = running
        if row is not None:
            if row.get("status") == "ok":
                self.ok += 1
            else:
                self.failed += 1
            self.bar.update(1)
        self.bar.set_postfix_str(f"ok={self.ok} failed={self.failed} running={self.running}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _record(store: ResultsStore, row: dict[str, Any], summary: RunSummary, progress: _Progress, running: int) -> None:
    stored = store.append(row)
    summary.rows.append(stored)
    if stored.get("status") == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
    progress.update(stored, running=running)


# ---------------------------------------------------------------------------------------------
# Local
# ---------------------------------------------------------------------------------------------
class LocalExecutor:
    """Runs trials one after another in this process (breakpoints and debuggers work)."""

    def __init__(self, *, progress: bool = True, raise_errors: bool = False, threads: int | None = None) -> None:
        self.progress = progress
        self.raise_errors = raise_errors  # let a trial's exception propagate (post-mortem debugging)
        # Threads per trial, as Ray gives each task its `cpus`: oversubscribed cores make torch
        # many times slower, and the same thread count keeps local and Ray metrics identical.
        self.threads = threads

    def run(
        self,
        specs: Sequence[Mapping[str, Any]],
        store: ResultsStore,
        trial_fn: TrialFn | None = None,
        load_fn: LoadFn | None = None,
    ) -> RunSummary:
        t0 = time.perf_counter()
        base = os.getcwd()
        summary = RunSummary(total=len(specs))
        keys = [_dataset_key(spec, base) for spec in specs]
        remaining: dict[str, int] = {}
        for key, _ in keys:
            remaining[key] = remaining.get(key, 0) + 1
        cache: dict[str, tuple[Any, BaseException | None, str | None]] = {}
        progress = _Progress(len(specs), self.progress, "trials (local)")
        try:
            for spec, (key, ds_spec) in zip(specs, keys):
                progress.update(running=1)
                if key not in cache:
                    cache[key] = self._load(load_fn, ds_spec)
                data, load_exc, load_tb = cache[key]
                if load_exc is not None:
                    row = failed_row(spec, f"dataset {ds_spec.get('name')!r} failed to load: {load_exc}", load_tb)
                elif self.raise_errors:
                    with _torch_threads(self.threads):
                        row = (trial_fn or _default_trial_fn())(dict(spec), data)
                else:
                    row = run_one(spec, data, trial_fn, self.threads)
                remaining[key] -= 1
                if remaining[key] == 0:
                    del cache[key]  # free each dataset after its last trial
                _record(store, row, summary, progress, running=0)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            progress.close()
            summary.elapsed_s = time.perf_counter() - t0
        return summary

    def _load(self, load_fn: LoadFn | None, ds_spec: dict[str, Any]) -> tuple[Any, BaseException | None, str | None]:
        try:
            return (load_fn or _default_load_fn())(ds_spec), None, None
        except Exception as exc:
            if self.raise_errors:
                raise
            return None, exc, traceback.format_exc()


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def _import_trial_stack(attempts: int = 3) -> None:
    """Import torch and the trial stack in a Ray worker, retrying a torn concurrent import.

    Ray's own threads may import torch (its tensor serialisers) while a task does; torch.optim's
    __init__ is not safe against that and can fail once with a NameError (seen as "name
    'adadelta' is not defined"). A failed import leaves nothing in sys.modules, so a retry after
    the other thread finished is clean.
    """
    for attempt in range(attempts):
        try:
            import icon_bench.trial  # noqa: F401  (pulls in torch, datasets, methods)

            return
        except NameError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def _ray_load(load_fn: LoadFn | None, ds_spec: dict[str, Any]) -> Any:
    # Runs in a Ray worker: the result stays in the object store and is never fetched by the driver.
    _import_trial_stack()
    return (load_fn or _default_load_fn())(ds_spec)


def _ray_trial(trial_fn: TrialFn | None, spec: dict[str, Any], data: Any, threads: int | None = None) -> dict[str, Any]:
    # `data` arrives resolved: Ray fetches the dataset object from the store because its ref is a
    # top-level argument of this task.
    _import_trial_stack()
    return run_one(spec, data, trial_fn, threads)


class RayExecutor:
    """Runs each trial as a Ray task with the suite's CPUs / (fractional) GPUs; datasets load once per cluster.

    Without `address` (and no Ray already initialised in this process) a local cluster starts with
    `num_cpus` / `num_gpus` (None: detected) and is shut down afterwards.
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

    def _init(self) -> bool:
        """Connect to (or start) Ray; True when this call started it and so must shut it down."""
        import ray

        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": self.log_to_driver}
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            ray.init(num_cpus=self.num_cpus, num_gpus=self.num_gpus, **kwargs)
        return True

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
        import ray
        from ray.exceptions import RayError

        t0 = time.perf_counter()
        summary = RunSummary(total=len(specs))
        if not specs:
            return summary
        started = self._init()
        progress: _Progress | None = None
        pending: list[Any] = []
        try:
            capacity = self._capacity()
            base = os.getcwd()  # relative dataset paths mean relative to where the user runs icon-bench
            load_task = ray.remote(_ray_load).options(
                num_cpus=min(self.cpus, 1.0), num_gpus=0, max_retries=self.max_retries, retry_exceptions=False
            )
            trial_task = ray.remote(_ray_trial).options(
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
                ref = trial_task.remote(trial_fn_ref, dict(spec), data_refs[key], threads_for(self.cpus))
                by_ref[ref] = spec
                pending.append(ref)
            # Pending tasks pin their arguments, so the driver can let go of the dataset refs now:
            # each dataset is freed from the object store once its last trial is done.
            data_refs.clear()
            progress = _Progress(len(specs), self.progress, "trials (ray)")
            progress.update(running=min(capacity, len(pending)))
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                if ready and pending:
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    ready += more
                for ref in ready:
                    spec = by_ref.pop(ref)
                    try:
                        row = ray.get(ref)
                    except RayError as exc:
                        row = self._error_row(spec, exc, self.max_retries)
                    _record(store, row, summary, progress, running=min(capacity, len(pending)))
                if not ready:
                    progress.update(running=min(capacity, len(pending)))
        except KeyboardInterrupt:
            summary.interrupted = True
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or gone: nothing to cancel
                    pass
        finally:
            if progress is not None:
                progress.close()
            if started:
                ray.shutdown()
            summary.elapsed_s = time.perf_counter() - t0
        return summary

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


def make_executor(
    kind: str,
    *,
    address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    progress: bool = True,
    **ray_kwargs: Any,
) -> LocalExecutor | RayExecutor:
    """'local' or 'ray', configured from a suite's resources."""
    if kind == "local":
        return LocalExecutor(progress=progress, threads=threads_for(cpus))
    if kind == "ray":
        return RayExecutor(address, cpus=cpus, gpus=gpus, progress=progress, **ray_kwargs)
    from icon_bench.errors import UnknownNameError

    raise UnknownNameError("executor", kind, ["local", "ray"])
