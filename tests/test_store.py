"""The results store: round trips, artifacts, latest-row-wins, torn lines, concurrent appends."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from icon_bench.run.execution.store import ResultsStore, StoreWarning


def _row(tid: str, status: str = "ok", **extra: object) -> dict:
    return {"trial_id": tid, "status": status, "metrics": {"nmi": 0.5}, **extra}


def test_round_trip_with_artifacts_and_store_fields(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "res", suite="demo", run_id="r1")
    emb = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    stored = store.append(_row("a", metrics={"nmi": np.float32(0.25)}, artifacts={"embedding_2d": emb, "labels": np.arange(5)}))
    assert stored["artifacts"] == "artifacts/a.npz"
    assert stored["suite"] == "demo" and stored["run_id"] == "r1" and "stored_at" in stored
    assert stored["metrics"]["nmi"] == 0.25 and type(stored["metrics"]["nmi"]) is float
    (row,) = ResultsStore(tmp_path / "res").rows()
    assert row == stored
    arrays = store.load_artifacts(row)
    np.testing.assert_array_equal(arrays["embedding_2d"], emb)
    np.testing.assert_array_equal(arrays["labels"], np.arange(5))
    # A row that already names its suite keeps it; a row with no arrays stores no artifact file.
    other = store.append(_row("b", suite="elsewhere", artifacts={}))
    assert other["suite"] == "elsewhere" and other["artifacts"] is None
    assert sorted(p.name for p in (tmp_path / "res" / "artifacts").iterdir()) == ["a.npz"]


def test_latest_row_per_trial_wins(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row("a", "failed", error="boom"))
    store.append(_row("b", "ok"))
    store.append(_row("c", "failed"))
    store.append(_row("a", "ok"))
    assert [r["trial_id"] for r in store.read()] == ["a", "b", "c", "a"]
    assert [(r["trial_id"], r["status"]) for r in store.rows()] == [("a", "ok"), ("b", "ok"), ("c", "failed")]
    assert store.done_ids() == {"a", "b"} and store.failed_ids() == {"c"}
    frame = store.to_dataframe()
    assert list(frame["trial_id"]) == ["a", "b", "c"] and "metrics.nmi" in frame.columns


def test_empty_store(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "none")
    assert store.rows() == [] and store.done_ids() == set() and store.to_dataframe().empty


def test_torn_last_line_is_ignored_and_reported(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row("a"))
    store.append(_row("b"))
    with open(store.path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"trial_id": "c", "status": "o')
    reader = ResultsStore(tmp_path)
    with pytest.warns(StoreWarning, match=r"results.jsonl:3: skipped torn last line"):
        rows = reader.rows()
    assert [r["trial_id"] for r in rows] == ["a", "b"]
    assert reader.skipped == [(3, "torn last line (interrupted write)")]
    # The next append must not glue itself onto the torn fragment.
    ResultsStore(tmp_path).append(_row("c"))
    with pytest.warns(StoreWarning, match=r":3: skipped unreadable line"):
        assert [r["trial_id"] for r in ResultsStore(tmp_path).rows()] == ["a", "b", "c"]
    assert store.path.read_bytes().endswith(b"\n")


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row("warm"))  # create the file (and check its tail) before the threads start
    big = "x" * 20_000  # lines larger than a pipe buffer still go down in one write

    def writer(k: int) -> None:
        for i in range(25):
            store.append(_row(f"{k}-{i}", payload=big))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = store.path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert len(parsed) == 1 + 4 * 25 and all(p.get("payload", big) == big for p in parsed)
