"""STL-10's `unlabeled: true`: the unlabelled images train label-free methods and stay out of everything scored."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from vision_files import make_stl10, patched_info, publish, serve

from icon_bench.data import load_dataset
from icon_bench.data.catalog import CATALOG
from icon_bench.errors import DataError, SuiteError, TrialError
from icon_bench.evaluation.metrics import MethodOutput, knn, linear_probe


@pytest.fixture
def stl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A generated stl10_binary.tar.gz (20 train, 8 test, 12 unlabelled images) on a loopback server."""
    monkeypatch.setenv("ICON_BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("ICON_BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("ICON_BENCH_MIRROR", raising=False)
    gen = make_stl10(np.random.default_rng(3), n_train=20, n_test=8, n_unlabeled=12)
    with serve() as server:
        publish(server, "stl10", gen)
        monkeypatch.setitem(CATALOG, "stl10", patched_info("stl10", gen, server.url))
        yield gen


def test_unlabelled_rows_train_and_never_score(stl) -> None:
    data = load_dataset({"name": "stl10", "unlabeled": True, "val_fraction": 0.25})
    y = data.y_train.numpy()
    assert data.meta["unlabelled_rows"] == 12 and int((y == -1).sum()) == 12
    assert len(data.y_val) == 5 and int(data.y_val.min()) >= 0  # val: a quarter of the 20 labelled rows
    assert len(y) == 15 + 12 and data.meta["n_train"] == 27
    # The unlabelled images are the last train rows, pixel for pixel, and data.images follows the rows.
    np.testing.assert_array_equal(data.images["train"][y == -1], stl.arrays["x_unlabeled"])
    np.testing.assert_array_equal(data.stored("train").numpy(), data.images["train"].reshape(27, -1))
    np.testing.assert_array_equal(data.images["unlabeled"], stl.arrays["x_unlabeled"])
    assert np.shares_memory(data.images["unlabeled"], data.stored("train").numpy())  # the last rows, not a copy
    back = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(back.images["unlabeled"], stl.arrays["x_unlabeled"])
    assert len(pickle.dumps(data)) < 1.2 * sum(data.stored(s).numel() for s in ("train", "val", "test"))
    # Without the option nothing changes: 20 labelled train rows, no -1.
    plain = load_dataset({"name": "stl10", "val_fraction": 0})
    assert len(plain.y_train) == 20 and int(plain.y_train.min()) >= 0 and "unlabelled_rows" not in plain.meta


def test_evaluation_banks_only_labelled_rows(stl) -> None:
    data = load_dataset({"name": "stl10", "unlabeled": True, "val_fraction": 0})
    gen = torch.Generator().manual_seed(0)
    test = torch.randn(len(data.y_test), 4, generator=gen)
    train = torch.randn(len(data.y_train), 4, generator=gen)
    # The unlabelled rows sit exactly on the test points: were they in the bank, kNN would vote with -1.
    unl = data.y_train < 0
    assert int(unl.sum()) == 12 and len(test) == 8
    train[unl] = test.repeat(2, 1)[:12]
    output = MethodOutput(train, test, None, None, {}, {})
    labelled = MethodOutput(train[~unl], test, None, None, {}, {})
    ref = load_dataset({"name": "stl10", "val_fraction": 0})  # the same labelled rows, nothing appended
    for metric in (knn(k=3), linear_probe()):
        assert metric(output, data) == pytest.approx(metric(labelled, ref))


def test_label_methods_are_refused(stl, tmp_path: Path) -> None:
    from icon_bench.run.execution.trial import run_trial
    from icon_bench.run.suite.reader import parse_suite

    spec = {"method": "supcon", "dataset": {"name": "stl10", "unlabeled": True}, "settings": {"epochs": 1}}
    row = run_trial({**spec, "seed": 0}, device="cpu")
    assert row["status"] == "failed" and "method 'supcon' trains on labels" in row["error"]
    with pytest.raises(DataError, match="transductive scores every row, and 12 train rows have no label"):
        load_dataset({"name": "stl10", "unlabeled": True, "transductive": True})
    text = (
        "name: s\ndatasets:\n  - digits\n  - {name: stl10, unlabeled: true}\n"
        "grid:\n  method: [simclr, cross_entropy]\n"
    )
    with pytest.raises(SuiteError, match=r"<suite>:4: datasets\[1\]\.unlabeled: method 'cross_entropy' trains on labels"):
        parse_suite(text)
    parse_suite(text.replace(", cross_entropy", ""))  # a label-free method alone loads
    # simclr trains on all 32 rows and is scored on the labelled ones.
    from icon_bench.hooks.registry import get_registry

    method = get_registry().get("method", "simclr").create()
    data = load_dataset({"name": "stl10", "unlabeled": True, "val_fraction": 0})
    out = method.run(data, overrides={"settings": {"epochs": 1, "batch_size": 16}, "model": {"name": "mlp"}})
    assert out.train_embeddings.shape[0] == 32
    with pytest.raises(TrialError, match="trains on labels"):
        get_registry().get("method", "supcon").create().run(data, overrides={"settings": {"epochs": 1}})
