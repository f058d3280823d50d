"""Protocol 2: the val split (disjoint, stratified, seeded), val trials that never see a test row, transductive mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from icon_bench.data.load import load_dataset
from icon_bench.data.splits import val_indices
from icon_bench.errors import DataError, SuiteError
from icon_bench.evaluation.metrics import hungarian_accuracy
from icon_bench.run.suite.ids import config_id, normalize_spec, trial_id
from icon_bench.run.execution.trial import run_trial


@pytest.fixture
def numbered(tmp_path: Path) -> dict:
    """An arrays file whose first feature is the row's number, so every row can be traced to its split."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [50, 30, 15, 5])  # unbalanced, so stratification shows
    x = np.column_stack([np.arange(len(y)), rng.normal(size=(len(y), 3))]).astype(np.float32)
    test = np.arange(len(y)) % 5 == 0
    path = tmp_path / "numbered.npz"
    np.savez(path, x_train=x[~test], y_train=y[~test], x_test=x[test], y_test=y[test])
    return {"name": "arrays", "path": str(path)}


def _ids(x: torch.Tensor) -> set[int]:
    return {int(v) for v in x[:, 0].round()}


def test_val_split_is_disjoint_from_train_and_test(numbered: dict) -> None:
    data = load_dataset(numbered)
    train, val, test = _ids(data.x_train), _ids(data.x_val), _ids(data.x_test)
    assert len(val) == len(data.y_val) == 8  # a tenth of the 80 train rows
    assert not train & val and not val & test and not train & test
    assert train | val | test == set(range(100))
    assert test == {i for i in range(100) if i % 5 == 0}  # the official test split stays the test split


def test_val_split_is_stratified_and_keeps_every_class_in_train(numbered: dict) -> None:
    data = load_dataset({**numbered, "val_fraction": 0.25})
    before = np.bincount(np.concatenate([data.y_train.numpy(), data.y_val.numpy()]), minlength=4)
    val = np.bincount(data.y_val.numpy(), minlength=4)
    assert np.all(np.abs(val - 0.25 * before) <= 1), (val, before)
    assert set(data.y_train.tolist()) == {0, 1, 2, 3}
    # A class with one row never loses it to val.
    train, held = val_indices(torch.tensor([0] * 9 + [1]), 0.5, seed=0, where="toy")
    assert torch.tensor([0] * 9 + [1])[train].tolist().count(1) == 1 and len(held) == 5


def test_val_split_is_stable_under_its_seed(numbered: dict) -> None:
    first, again = load_dataset(numbered), load_dataset(dict(numbered))
    other = load_dataset({**numbered, "val_seed": 1})
    assert _ids(first.x_val) == _ids(again.x_val) and first.meta["content_hash"] == again.meta["content_hash"]
    assert _ids(other.x_val) != _ids(first.x_val) and _ids(other.x_test) == _ids(first.x_test)
    assert (first.meta["val_fraction"], first.meta["val_seed"]) == (0.1, 0) and other.meta["val_seed"] == 1
    assert len(load_dataset({**numbered, "val_fraction": 0}).y_val) == 0


def test_bad_split_options_are_named() -> None:
    with pytest.raises(DataError, match=r"dataset 'iris': val_fraction must be a number in \[0, 1\), got 1.5"):
        load_dataset({"name": "iris", "val_fraction": 1.5})
    with pytest.raises(DataError, match="transductive fits and scores on all rows.*drop val_fraction=0.2"):
        load_dataset({"name": "iris", "transductive": True, "val_fraction": 0.2})
    with pytest.raises(DataError, match="transductive must be true or false"):
        load_dataset({"name": "iris", "transductive": "yes"})


def test_split_is_part_of_the_trial_id() -> None:
    spec = {"method": "kmeans", "dataset": "iris"}
    assert normalize_spec(spec)["split"] == "test" and trial_id(spec) == trial_id({**spec, "split": "test"})
    assert trial_id(spec) != trial_id({**spec, "split": "val"}) and config_id(spec) != config_id({**spec, "split": "val"})
    with pytest.raises(SuiteError, match="split must be one of 'test', 'val', got 'train'"):
        normalize_spec({**spec, "split": "train"})


def test_a_val_trial_never_sees_a_test_row(numbered: dict) -> None:
    data = load_dataset(numbered)
    # Test rows that would crash or change any computation that touched them.
    poisoned = dataclasses.replace(
        data, x_test=torch.full_like(data.x_test, float("nan")), y_test=torch.randint(0, 4, data.y_test.shape)
    )
    spec = {"method": "kmeans", "dataset": numbered, "split": "val"}
    clean, dirty = run_trial(spec, data=data), run_trial(spec, data=poisoned)
    assert clean["status"] == dirty["status"] == "ok", dirty["traceback"]
    assert clean["metrics"] == dirty["metrics"] and clean["split"] == "val"
    assert clean["data"]["n_val"] == 8 and clean["protocol"]["split"] == "val"
    # The scored rows are the val rows: k-means fitted on train, predicting val.
    km = KMeans(n_clusters=4, n_init=10, random_state=0).fit(data.x_train.numpy())
    assert clean["metrics"]["hungarian"] == pytest.approx(hungarian_accuracy(data.y_val, km.predict(data.x_val.numpy())))
    assert run_trial({**spec, "split": "test"}, data=poisoned)["status"] == "failed"  # test trials do read it


def test_a_val_trial_without_a_val_split_fails_with_the_reason() -> None:
    row = run_trial({"method": "kmeans", "dataset": {"name": "iris", "val_fraction": 0}, "split": "val"})
    assert row["status"] == "failed" and "has no val split" in row["error"] and "val_fraction > 0" in row["error"]


def test_learned_methods_train_without_the_val_rows_and_embed_them() -> None:
    data = load_dataset({"name": "blobs", "n_samples": 200, "centers": 3})
    row = run_trial({"method": "pmi", "dataset": {"name": "blobs", "n_samples": 200, "centers": 3},
                     "settings": {"epochs": 2}}, data=data)
    assert row["status"] == "ok", row["traceback"]
    out = __import__("icon_bench").method("pmi").run(data, seed=0, overrides={"settings": {"epochs": 1}})
    assert out.train_embeddings.shape[0] == len(data.y_train) == 144
    assert out.val_embeddings.shape[0] == len(data.y_val) == 16 and out.val_clusters.shape == (16,)


def test_transductive_mode_fits_and_scores_on_all_rows() -> None:
    spec = {"name": "iris", "transductive": True}
    data = load_dataset(spec)
    assert len(data.y_train) == 150 and data.x_test is data.x_train and len(data.y_val) == 0
    row = run_trial({"method": "kmeans", "dataset": spec})
    assert row["status"] == "ok", row["traceback"]
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(data.x_train.numpy())
    assert row["metrics"]["hungarian"] == pytest.approx(hungarian_accuracy(data.y_train, km))
    # Recorded in the protocol, whose version keeps these rows apart from the inductive ones.
    assert row["protocol"]["settings"]["splits"] == {"val_fraction": 0.0, "val_seed": 0, "transductive": True}
    assert row["protocol"]["version"].startswith("2+")
    assert run_trial({"method": "kmeans", "dataset": "iris"})["protocol"]["version"] == "2"


def test_transductive_mode_refuses_what_would_score_its_own_training_rows() -> None:
    spec = {"name": "iris", "transductive": True}
    knn = run_trial({"method": "kmeans", "dataset": spec, "evaluate": ["hungarian", "knn"]})
    assert knn["status"] == "failed" and "clustering and 2-D maps only; knn" in knn["error"]
    supcon = run_trial({"method": "supcon", "dataset": spec, "evaluate": ["hungarian"], "settings": {"epochs": 1}})
    assert supcon["status"] == "failed" and "learns from labels" in supcon["error"]
    val = run_trial({"method": "kmeans", "dataset": spec, "split": "val"})
    assert val["status"] == "failed" and "transductive dataset has no val split" in val["error"]


def test_transductive_data_crosses_pickling_as_one_tensor() -> None:
    import pickle

    data = load_dataset({"name": "iris", "transductive": True})
    back = pickle.loads(pickle.dumps(data))
    assert back.x_test is back.x_train and torch.equal(back.x_train, data.x_train)
    assert len(pickle.dumps(data)) < 1.5 * len(pickle.dumps(load_dataset({"name": "iris", "val_fraction": 0})))
