"""A dataset is known by what it is: labels from the suite or the content, one table per dataset, split and protocol."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from icon_bench.data.load import load_dataset
from icon_bench.data.options import dataset_label
from icon_bench.errors import SuiteError
from icon_bench.report.build import aggregate, build_report
from icon_bench.report.rows import load_rows, normalise_rows
from icon_bench.run.execution.base import failed_row
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import parse_suite
from icon_bench.run.execution.trial import run_trial


def _file(folder: Path, seed: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 4)) + 3 * y[:, None]
    np.savez(folder / "features.npz", x=x.astype(np.float32), y=y)
    return str(folder / "features.npz")


def test_labels_say_what_the_data_is(tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a", 0), _file(tmp_path / "b", 1)
    la, lb = (load_dataset({"name": "arrays", "path": p}).meta["label"] for p in (a, b))
    # Same file name, different content: different labels (the stem plus 6 hex of the content hash).
    assert la.startswith("features-") and lb.startswith("features-") and la != lb and len(la) == len("features-") + 6
    assert load_dataset({"name": "arrays", "path": a}).meta["label"] == la  # the same file, the same label
    assert load_dataset({"name": "arrays", "path": a, "pca": 2, "subset": 40}).meta["label"] == f"{la}-subset40-pca2"
    assert load_dataset({"name": "arrays", "path": a, "label": "my-features"}).meta["label"] == "my-features"
    assert dataset_label("digits") == "digits"
    assert dataset_label({"name": "digits", "standardize": True, "subset": 500, "subset_seed": 1}) == "digits-subset500s1-std"
    assert dataset_label({"name": "blobs", "centers": 3, "val_seed": 2}) == "blobs(centers=3)"
    # Before the file is read (a trial that failed to load it), its parameters stand in for the hash.
    assert dataset_label({"name": "arrays", "path": "/x/features.npz", "features": "x"}) == "features(features=x)"


def _stored(rows: list[dict], folder: Path) -> Path:
    store = ResultsStore(folder, suite="identity")
    for row in rows:
        store.append(row)
    return folder


def test_two_arrays_files_get_two_leaderboards(tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a", 0), _file(tmp_path / "b", 1)
    rows = [run_trial({"method": "kmeans", "dataset": {"name": "arrays", "path": p}, "seed": s}) for p in (a, b) for s in (0, 1)]
    assert all(r["status"] == "ok" for r in rows)
    missing = {"method": "kmeans", "dataset": {"name": "arrays", "path": a}, "seed": 2}
    crashed = failed_row(run_trial(missing)["spec"], "RuntimeError: worker died")  # no data loaded, no hash
    results = _stored([*rows, crashed], tmp_path / "results")
    # The crashed trial takes the label of the rows that ran on its dataset entry.
    labels = normalise_rows(load_rows(results))["dataset"].tolist()
    assert labels == [rows[0]["dataset_label"]] * 2 + [rows[2]["dataset_label"]] * 2 + [rows[0]["dataset_label"]]
    report = build_report(results)
    tables = sorted(s.dataset for s in report.sections)
    assert tables == sorted({r["dataset_label"] for r in rows}) and len(tables) == 2
    assert list(report.failed["dataset"]) == [rows[0]["dataset_label"]]
    # It carries its protocol too, so it marks its configuration incomplete in that very table.
    assert crashed["protocol"]["version"] == "2"
    first = next(s for s in report.sections if s.dataset == rows[0]["dataset_label"])
    assert first.table.iloc[0]["failed_seeds"] == [2] and not first.table.iloc[0]["complete"]


def test_a_suite_label_names_one_dataset_only() -> None:
    with pytest.raises(SuiteError, match=r"<suite>:4: datasets\[1\]\.label: label 'x' already names another dataset \(line 3\)"):
        parse_suite("name: s\ndatasets:\n  - {name: iris, label: x}\n  - {name: wine, label: x}\ngrid: {method: kmeans}\n")
    with pytest.raises(SuiteError, match="label 'x' already names another dataset"):
        parse_suite("name: s\ndatasets:\n  - {name: iris, label: x}\n  - {name: iris, label: x, pca: 2}\n"
                    "grid: {method: kmeans}\n")
    same = parse_suite("name: s\ndatasets:\n  - {name: iris, label: x}\n  - {name: iris, label: x}\n"
                       "grid: {method: kmeans}\n")
    assert len(same.trials()) == 1  # the same entry twice is one dataset
    with pytest.raises(SuiteError, match="val_fraction must be a number in"):
        parse_suite("name: s\ndatasets:\n  - {name: iris, val_fraction: 2}\ngrid: {method: kmeans}\n")


def test_protocol_1_and_2_rows_and_val_rows_never_share_a_table(tmp_path: Path) -> None:
    spec = {"method": "kmeans", "dataset": "iris"}
    new = [run_trial({**spec, "seed": s}) for s in (0, 1)]
    val = [run_trial({**spec, "seed": s, "split": "val"}) for s in (0, 1)]
    # A row as protocol 1 wrote it: no split, no val rows held out, version "1".
    old = []
    for row in copy.deepcopy(new):
        row["spec"].pop("split")
        for key in ("split", "dataset_label", "data"):
            row.pop(key)
        row["protocol"] = {"version": "1", "settings": {}, "metrics": row["protocol"]["metrics"]}
        row["trial_id"], row["config_id"] = row["trial_id"][::-1], row["config_id"][::-1]
        row["metrics"] = {k: v - 0.1 for k, v in row["metrics"].items()}
        old.append(row)
    results = _stored([*old, *new, *val], tmp_path / "results")
    agg = aggregate(normalise_rows(load_rows(results)))
    assert sorted(zip(agg["protocol_version"], agg["split"], agg["n"])) == [("1", "test", 2), ("2", "test", 2), ("2", "val", 2)]
    report = build_report(results)
    keys = [(s.protocol_version, s.split, s.dataset, len(s.table)) for s in report.sections]
    assert keys == [("1", "test", "iris", 1), ("2", "test", "iris", 1), ("2", "val", "iris", 1)]
    means = [s.table.iloc[0]["hungarian_mean"] for s in report.sections]
    assert means[0] == pytest.approx(np.mean([r["metrics"]["hungarian"] for r in old]))
    assert means[1] == pytest.approx(np.mean([r["metrics"]["hungarian"] for r in new]))
    assert means[2] == pytest.approx(np.mean([r["metrics"]["hungarian"] for r in val]))
