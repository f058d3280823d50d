"""The in-run hook: the results store of a suite with `track:` also logs each row it stores; a logging failure never stops the sweep."""

from __future__ import annotations

import os
import shlex
import sys
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from icon_bench.run.execution.store import ResultsStore

if TYPE_CHECKING:
    from icon_bench.run.suite.model import Suite
    from icon_bench.track.mlflow_log import MlflowLog

__all__ = ["TrackedStore", "tracked_store"]


class _Tracker:
    """An MlflowLog that, after its first failure, says so once and logs nothing more (each try could wait
    minutes on a dead server); `icon-bench export mlflow` logs what was missed later."""

    def __init__(self, make: Any, catch_up: str, out: TextIO) -> None:
        self.out, self.catch_up = out, catch_up
        self.log: MlflowLog | None = None
        self.failed = False
        self._guard(lambda: setattr(self, "log", make()))
        if self.log is not None:
            log = self.log
            self._guard(lambda: log.client.update_run(log.parent_id, status="RUNNING"))
            print(f"mlflow: logging trials to {log.describe()}", file=out, flush=True)

    def _guard(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - any failure of the tracker: the rows are safe in the store
            if not self.failed:
                first = (str(exc).splitlines() or [""])[0][:300]
                print(f"warning: mlflow logging failed ({type(exc).__name__}: {first}); the suite goes on without "
                      f"it; log the rows later with: {self.catch_up}",
                      file=sys.stderr, flush=True)
            self.failed, self.log = True, None

    def row(self, row: Mapping[str, Any], store_dir: Any) -> None:
        if self.log is not None:
            log = self.log
            self._guard(lambda: log.log_row(row, store_dir))

    def close(self) -> None:
        if self.log is not None:
            log = self.log
            self._guard(log.finish)


class TrackedStore(ResultsStore):
    """The run's results store; every row it stores also goes to the suite's tracker."""

    def __init__(self, store: ResultsStore, tracker: _Tracker) -> None:
        self.__dict__.update(store.__dict__)
        self._tracker = tracker
        # The parent run ends when the run lets go of its store (or at exit): the runner needs no hook for it.
        weakref.finalize(self, tracker.close)

    def append(self, row: Mapping[str, Any]) -> dict[str, Any]:
        stored = super().append(row)
        self._tracker.row(stored, self.directory)
        return stored

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to another process stores rows without logging them (the tracker stays here).
        return {k: v for k, v in self.__dict__.items() if k != "_tracker"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tracker = _Tracker(lambda: None, "", sys.stderr)


def suite_uri(uri: str | None, root: Path) -> str | None:
    """A tracking URI as a suite means it: a relative SQLite file or folder is relative to the suite's root."""
    if uri is None or uri.startswith("sqlite:////"):  # None, or an absolute SQLite file
        return uri
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + os.fspath(root / uri[len("sqlite:///"):])
    # A relative folder (MLflow's file store) written as a path; a bare word may be a URI ("databricks").
    if ":" not in uri and "/" in uri and not os.path.isabs(os.path.expanduser(uri)):
        return os.fspath(root / uri)
    return uri


def tracked_store(store: ResultsStore, suite: Suite, out: TextIO) -> ResultsStore:
    """`store` as is, or, when the suite has a `track:` block, a store that also logs to it."""
    track = suite.track.mlflow if suite.track is not None else None
    if track is None:
        return store

    def make() -> MlflowLog:
        from icon_bench.track.mlflow_log import MlflowLog

        return MlflowLog(uri, track.experiment or suite.name, suite=suite.name,
                         results_dir=store.directory)

    uri = suite_uri(track.tracking_uri, suite.root.absolute())
    catch_up = ["icon-bench", "export", "mlflow", str(store.directory)]
    catch_up += ["--tracking-uri", uri] if uri else []
    catch_up += ["--experiment", track.experiment or suite.name]
    return TrackedStore(store, _Tracker(make, shlex.join(catch_up), out))
