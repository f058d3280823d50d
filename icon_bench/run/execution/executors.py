"""The local executor (trials in this process, one after another) and `make_executor`."""

from __future__ import annotations

import functools
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from icon_bench.run.execution.base import (
    LoadFn,
    RunSummary,
    TrialFn,
    _dataset_key,
    _default_load_fn,
    _default_trial_fn,
    _record,
    _torch_threads,
    failed_row,
    run_one,
    threads_for,
)
from icon_bench.run.execution.progress import Progress
from icon_bench.run.execution.ray_executor import RayExecutor
from icon_bench.run.execution.store import ResultsStore

__all__ = ["LocalExecutor", "make_executor"]


# ---------------------------------------------------------------------------------------------
# Local
# ---------------------------------------------------------------------------------------------
class LocalExecutor:
    """Runs trials one after another in this process (breakpoints and debuggers work)."""

    def __init__(
        self,
        *,
        progress: bool = True,
        raise_errors: bool = False,
        threads: int | None = None,
        base: str | os.PathLike[str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.progress = progress
        self.out = out  # where "one line per finished trial" goes when stderr is not a terminal
        self.base = base  # what relative dataset paths are relative to (the suite's root); None: cwd
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
        base = os.fspath(self.base) if self.base is not None else os.getcwd()
        summary = RunSummary(total=len(specs))
        keys = [_dataset_key(spec, base) for spec in specs]
        remaining: dict[str, int] = {}
        for key, _ in keys:
            remaining[key] = remaining.get(key, 0) + 1
        cache: dict[str, tuple[Any, BaseException | None, str | None]] = {}
        progress = Progress(len(specs), enabled=self.progress, out=self.out)
        if trial_fn is None and progress.epochs:
            # In a terminal a long trial shows its epochs in a bar of its own, below the suite's.
            trial_fn = functools.partial(_default_trial_fn(), progress=True)
        try:
            for spec, (key, ds_spec) in zip(specs, keys):
                progress.start(spec)
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
                _record(store, row, summary, progress)
                if summary.store_error:
                    break  # the store refused the row: it is in the fallback; stop before computing more
            progress.idle()
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


def make_executor(
    kind: str,
    *,
    address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    progress: bool = True,
    base: str | os.PathLike[str] | None = None,
    out: TextIO | None = None,
    **ray_kwargs: Any,
) -> LocalExecutor | RayExecutor:
    """'local' or 'ray', configured from a suite's resources.

    `base` is what relative dataset paths are relative to; `out` takes the line per finished trial
    when stderr is not a terminal (else a bar shows there).
    """
    if kind == "local":
        return LocalExecutor(progress=progress, threads=threads_for(cpus), base=base, out=out)
    if kind == "ray":
        return RayExecutor(address, cpus=cpus, gpus=gpus, progress=progress, base=base, out=out, **ray_kwargs)
    from icon_bench.errors import UnknownNameError

    raise UnknownNameError("executor", kind, ["local", "ray"])
