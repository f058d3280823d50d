"""Datasets: built-ins, every array file format, bad input, common options and the cached kNN graph."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

import icon_bench
from icon_bench.data.graph import clear_graph_cache, knn_graph
from icon_bench.data.load import load_dataset
from icon_bench.data.splits import DataSplits, stratified_subset
from icon_bench.errors import DataError, UnknownNameError


def _check_splits(d: DataSplits, n_total: int, n_features: int, num_classes: int) -> None:
    assert d.x_train.dtype == torch.float32 and d.x_test.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.y_test.dtype == torch.int64
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == n_total
    assert d.x_train.shape[1:] == d.x_val.shape[1:] == d.x_test.shape[1:] == (n_features,)
    assert d.num_classes == num_classes
    assert set(d.y_train.tolist()) == set(d.y_val.tolist()) == set(d.y_test.tolist()) == set(range(num_classes))


@pytest.mark.parametrize(
    ("name", "n", "d", "c"), [("digits", 1797, 64, 10), ("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2)]
)
def test_sklearn_datasets_shapes_and_stratified_split(name: str, n: int, d: int, c: int) -> None:
    data = load_dataset(name)
    _check_splits(data, n, d, c)
    assert abs(len(data.x_test) - 0.2 * n) <= 1
    # Stratified: each class's test share is within one row of 20 %.
    y_all = torch.cat([data.y_train, data.y_val, data.y_test])
    for k in range(c):
        assert abs(int((data.y_test == k).sum()) - 0.2 * int((y_all == k).sum())) <= 1
    again = load_dataset({"name": name})
    assert torch.equal(again.x_test, data.x_test) and data.meta["content_hash"] == again.meta["content_hash"]
    other = load_dataset({"name": name, "split_seed": 1})
    assert not torch.equal(other.y_test, data.y_test) or not torch.equal(other.x_test, data.x_test)


def test_digits_values_and_image_shape() -> None:
    ref = load_digits()
    data = load_dataset("digits")
    assert data.meta["image_shape"] == [1, 8, 8] and data.image_shape == (1, 8, 8)
    assert float(data.x_train.max()) == 1.0 and float(data.x_train.min()) == 0.0
    # Every row is a row of scikit-learn's table, scaled by 1/16.
    ref_rows = {tuple(r) for r in (ref.data / 16.0).astype(np.float32)}
    assert all(tuple(r) in ref_rows for r in data.x_test.numpy())
    images = load_dataset({"name": "digits", "images": True})
    assert images.x_train.shape[1:] == (1, 8, 8)
    assert torch.equal(images.x_train.reshape(len(images.x_train), -1), data.x_train)


def test_blobs() -> None:
    data = load_dataset({"name": "blobs", "n_samples": 300, "n_features": 4, "centers": 3, "seed": 1})
    _check_splits(data, 300, 4, 3)
    assert not torch.equal(data.x_train, load_dataset({"name": "blobs", "n_samples": 300, "n_features": 4, "centers": 3}).x_train)


def test_unknown_option_suggests() -> None:
    with pytest.raises(UnknownNameError, match="standardize"):
        load_dataset({"name": "digits", "standardise": True})
    with pytest.raises(UnknownNameError, match="test_size"):
        load_dataset({"name": "iris", "test_sise": 0.3})


# -- array files ---------------------------------------------------------------------------------


@pytest.fixture
def toy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 5)).astype(np.float32), np.repeat(np.arange(4), 10)


def _assert_same(data: DataSplits, x: np.ndarray, y: np.ndarray) -> None:
    # 32 train rows of the 40, of which protocol 2 holds out a stratified tenth as val.
    assert len(data.x_train) + len(data.x_val) == 32 and len(data.x_test) == 8
    got = np.concatenate([data.x_train.numpy(), data.x_val.numpy(), data.x_test.numpy()])
    got_y = np.concatenate([data.y_train.numpy(), data.y_val.numpy(), data.y_test.numpy()])
    order = np.lexsort(got.T[::-1])
    ref = np.lexsort(x.T[::-1])
    np.testing.assert_allclose(got[order], x[ref], rtol=1e-6)
    np.testing.assert_array_equal(got_y[order], y[ref])


def test_arrays_npy_with_sibling_labels(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    np.save(tmp_path / "x_train.npy", x)
    np.save(tmp_path / "y_train.npy", y)
    _assert_same(load_dataset({"name": "arrays", "path": str(tmp_path / "x_train.npy")}), x, y)
    np.save(tmp_path / "feats.npy", x)
    np.save(tmp_path / "my_labels.npy", y)
    _assert_same(load_dataset({"name": "arrays", "path": str(tmp_path / "feats.npy"), "labels": "my_labels.npy"}), x, y)


def test_arrays_npz_pt_safetensors(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    x, y = toy
    np.savez(tmp_path / "d.npz", feats=x, labs=y)
    torch.save({"feats": torch.from_numpy(x), "labs": torch.from_numpy(y)}, tmp_path / "d.pt")
    save_file({"feats": x, "labs": y.astype(np.int64)}, str(tmp_path / "d.safetensors"))
    for suffix in ("npz", "pt", "safetensors"):
        data = icon_bench.dataset("arrays", path=str(tmp_path / f"d.{suffix}"), features="feats", labels="labs").load()
        _assert_same(data, x, y)
        assert data.meta["format"] == suffix


def test_arrays_tables(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(cls=y)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for suffix in ("csv", "parquet"):
        data = load_dataset({"name": "arrays", "path": str(tmp_path / f"d.{suffix}"), "labels": "cls"})
        _assert_same(data, x, y)
    picked = load_dataset({"name": "arrays", "path": str(tmp_path / "d.csv"), "labels": "cls", "features": "f0,f3"})
    assert picked.x_train.shape[1] == 2


def test_arrays_given_test_split_and_label_remap(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30] * 10 + 5, x_test=x[30:], y_test=y[30:] * 10 + 5)
    data = load_dataset({"name": "arrays", "path": str(tmp_path / "d.npz"), "test_features": "x_test", "test_labels": "y_test"})
    np.testing.assert_array_equal(data.x_test.numpy(), x[30:])
    whole = load_dataset({"name": "arrays", "path": str(tmp_path / "d.npz"), "test_features": "x_test",
                          "test_labels": "y_test", "val_fraction": 0})
    np.testing.assert_array_equal(whole.y_train.numpy(), y[:30])
    assert data.meta["label_values"] == [5, 15, 25, 35] and data.meta["split"] == "given"


def test_arrays_uses_a_files_own_split_by_default(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    data = load_dataset({"name": "arrays", "path": str(tmp_path / "d.npz")})
    np.testing.assert_array_equal(data.x_test.numpy(), x[30:])
    assert len(data.x_train) + len(data.x_val) == 30 and data.meta["split"] == "given"
    np.savez(tmp_path / "only.npz", x_train=x, y_train=y)  # no split in the file: a stratified one
    assert load_dataset({"name": "arrays", "path": str(tmp_path / "only.npz")}).meta["split"] != "given"


def test_arrays_images_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(20, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "im.npz", x_train=imgs, y_train=np.arange(20) % 2)
    flat = load_dataset({"name": "arrays", "path": str(tmp_path / "im.npz")})
    assert flat.x_train.shape[1:] == (36,) and flat.meta["image_shape"] == [1, 6, 6]
    assert float(flat.x_train.max()) <= 1.0
    kept = load_dataset({"name": "arrays", "path": str(tmp_path / "im.npz"), "flatten": False})
    assert kept.x_train.shape[1:] == (1, 6, 6)
    assert set((kept.x_train.reshape(-1).numpy() * 255).round().astype(int)) <= set(range(256))


def test_mnist_loads(mnist_path: Path) -> None:
    spec = {"name": "arrays", "path": str(mnist_path), "test_features": "x_test", "test_labels": "y_test"}
    data = load_dataset({**spec, "subset": 500})
    assert data.x_train.shape == (450, 784) and data.x_val.shape == (50, 784) and data.x_test.shape == (500, 784)
    assert data.num_classes == 10 and data.meta["image_shape"] == [1, 28, 28]
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) == 1.0
    images = load_dataset({**spec, "flatten": False, "subset": 100})
    assert images.x_test.shape == (100, 1, 28, 28)


def _error(spec: dict, pattern: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(spec)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_bad_inputs_name_the_file(tmp_path: Path, toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    missing = tmp_path / "nope.npz"
    _error({"name": "arrays", "path": str(missing)}, rf"{re.escape(str(missing))}: file not found")

    p = tmp_path / "short.npz"
    np.savez(p, x_train=x, y_train=y[:-3])
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: 40 feature rows but 37 labels")

    p = tmp_path / "nan.npz"
    bad = x.copy()
    bad[7, 2] = np.nan
    bad[9, 0] = np.inf
    np.savez(p, x_train=bad, y_train=y)
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: .*2 NaN/inf values \(first in row 7\)")

    p = tmp_path / "float_labels.npz"
    np.savez(p, x_train=x, y_train=y + 0.5)
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: labels must be integers; row 0")

    p = tmp_path / "str_labels.csv"
    pd.DataFrame(x).assign(label=["a", "b"] * 20).to_csv(p, index=False)
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: labels must be integers")

    p = tmp_path / "keys.npz"
    np.savez(p, x_train=x, y_train=y)
    _error({"name": "arrays", "path": str(p), "features": "x_trian"}, rf"{re.escape(str(p))}: no key 'x_trian'.*did you mean 'x_train'")

    # The error says how to set the key: in the suite's dataset entry or with --set (issue 14 item 5).
    p = tmp_path / "odd_keys.npz"
    np.savez(p, feats=x, y=y)
    _error(
        {"name": "arrays", "path": str(p)},
        rf"{re.escape(str(p))}: none of the default key names .* is among \['feats', 'y'\]; "
        r"set `features: <key>` in the suite's dataset entry \(or `--set dataset.features=<key>`\)",
    )
    _error({"name": "arrays", "path": str(p), "features": "feat"}, r"no key 'feat' \(dataset.features\); did you mean 'feats'")

    p = tmp_path / "lonely.npy"
    np.save(p, x)
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: no labels file found.*`--set dataset.labels=<path>`")

    p = tmp_path / "data.txt"
    p.write_text("1,2")
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: unsupported file type")

    p = tmp_path / "corrupt.npz"
    p.write_bytes(b"not a zip")
    _error({"name": "arrays", "path": str(p)}, rf"{re.escape(str(p))}: cannot read")


# -- options -------------------------------------------------------------------------------------


def test_standardize_and_pca_fit_on_train() -> None:
    from sklearn.decomposition import PCA

    data = load_dataset({"name": "wine", "standardize": True})
    assert torch.allclose(data.x_train.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(13), atol=1e-4)
    assert data.x_test.mean(0).abs().max() > 1e-3  # the test split is transformed, not refitted

    raw = load_dataset("digits")
    red = load_dataset({"name": "digits", "pca": 5})
    assert torch.equal(raw.y_val, red.y_val)  # the val split is carved before pca, and pca fits without it
    ref = PCA(5, svd_solver="full").fit(raw.x_train.double().numpy())
    # Same subspace and scores up to each component's sign.
    ref_test = ref.transform(raw.x_test.double().numpy())
    signs = np.sign((ref_test * red.x_test.numpy()).sum(0))
    np.testing.assert_allclose(red.x_test.numpy(), ref_test * signs, atol=1e-3)
    assert "image_shape" not in red.meta and [s["step"] for s in red.meta["preprocessing"]] == ["val_split", "pca"]
    with pytest.raises(DataError, match="pca needs vector features"):
        load_dataset({"name": "digits", "images": True, "pca": 5})


def test_subset_is_stratified_and_seeded() -> None:
    data = load_dataset({"name": "digits", "subset": 200, "val_fraction": 0})
    assert len(data.x_train) == 200 and len(data.x_test) == 200
    counts = torch.bincount(data.y_train, minlength=10)
    assert int(counts.min()) >= 19 and int(counts.max()) <= 21
    # The val split comes out of the subset's train rows: 20 of 200.
    carved = load_dataset({"name": "digits", "subset": 200})
    assert (len(carved.x_train), len(carved.x_val), len(carved.x_test)) == (180, 20, 200)
    again = load_dataset({"name": "digits", "subset": 200, "val_fraction": 0})
    other = load_dataset({"name": "digits", "subset": 200, "subset_seed": 1, "val_fraction": 0})
    assert torch.equal(again.x_train, data.x_train) and not torch.equal(other.x_train, data.x_train)
    idx = stratified_subset(torch.tensor([0] * 90 + [1] * 10), 20, seed=3)
    assert torch.bincount(torch.tensor([0] * 90 + [1] * 10)[idx]).tolist() == [18, 2]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_graph_matches_sklearn(metric: str) -> None:
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(150, 6)).astype(np.float32))
    graph = knn_graph(x, 7, metric, chunk_size=16)
    nn_metric = "cosine" if metric == "cosine" else "euclidean"
    _, ref = NearestNeighbors(n_neighbors=8, metric=nn_metric).fit(x.numpy()).kneighbors(x.numpy())
    assert (ref[:, 0] == np.arange(150)).all()
    np.testing.assert_array_equal(graph.numpy(), ref[:, 1:])


def test_knn_option_is_cached(tmp_path: Path) -> None:
    spec = {"name": "iris", "knn": 5, "knn_metric": "euclidean"}
    first = load_dataset(spec, cache_dir=tmp_path)
    assert first.knn_train is not None and first.knn_train.shape == (len(first.x_train), 5)
    assert first.knn_train.dtype == torch.int64 and first.meta["knn_cache"] == "computed"
    assert not (first.knn_train == torch.arange(len(first.x_train))[:, None]).any()
    files = list((tmp_path / "knn").glob("*.npy"))
    assert len(files) == 1
    second = load_dataset(spec, cache_dir=tmp_path)
    assert second.meta["knn_cache"] == "memory" and torch.equal(second.knn_train, first.knn_train)
    clear_graph_cache()  # as a fresh process sees it: only the file
    from_disk = load_dataset(spec, cache_dir=tmp_path)
    assert from_disk.meta["knn_cache"] == "disk" and torch.equal(from_disk.knn_train, first.knn_train)
    # Another cache directory gets the file too, even when the graph came from memory.
    elsewhere = load_dataset(spec, cache_dir=tmp_path / "other")
    assert elsewhere.meta["knn_cache"] == "memory" and len(list((tmp_path / "other" / "knn").glob("*.npy"))) == 1
    # Different features (standardised) are a different key, so a fresh graph.
    third = load_dataset({**spec, "standardize": True}, cache_dir=tmp_path)
    assert third.meta["knn_cache"] == "computed" and len(list((tmp_path / "knn").glob("*.npy"))) == 2
    with pytest.raises(DataError, match="did you mean 'cosine'"):
        load_dataset({"name": "iris", "knn": 5, "knn_metric": "cosin"}, cache_dir=tmp_path)


def test_knn_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICON_BENCH_CACHE", str(tmp_path / "c"))
    data = load_dataset({"name": "iris", "knn": 3})
    assert data.meta["knn_cache"] == "computed" and any((tmp_path / "c" / "knn").iterdir())


def test_meta_is_reproducible_record() -> None:
    data = load_dataset({"name": "iris", "standardize": True, "subset": 50})
    assert data.meta["options"] == {"standardize": True, "subset": 50}
    assert [s["step"] for s in data.meta["preprocessing"]] == ["subset", "val_split", "standardize"]
    assert (data.meta["val_fraction"], data.meta["val_seed"], data.meta["transductive"]) == (0.1, 0, False)
    assert data.meta["raw_content_hash"] != data.meta["content_hash"]
    assert data.meta["dataset"] == {"name": "iris", "params": {}}
    assert data.meta["source"] == "sklearn.datasets.load_iris"
