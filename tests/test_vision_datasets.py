"""The image datasets: parsed exactly from each published format, downloaded from a loopback server, verified, cached."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from vision_files import MAKERS, Generated, make_mnist, patched_info, publish, serve, write_tree

from icon_bench.data import load_dataset
from icon_bench.data.catalog import CATALOG
from icon_bench.errors import DataError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty dataset cache of this test's own, online (the server is on 127.0.0.1)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ICON_BENCH_DATA", str(root))
    monkeypatch.delenv("ICON_BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("ICON_BENCH_MIRROR", raising=False)
    return root


def _serve_dataset(monkeypatch: pytest.MonkeyPatch, server, name: str, seed: int = 0) -> Generated:
    gen = MAKERS[name](np.random.default_rng(seed))
    publish(server, name, gen)
    monkeypatch.setitem(CATALOG, name, patched_info(name, gen, server.url))
    return gen


def _assert_matches(data, gen: Generated, labels: str = "") -> None:
    """Rows, raw images and labels equal what was generated (val_fraction 0: train is all train rows)."""
    for split in ("train", "test"):
        x = gen.arrays[f"x_{split}"]
        x = x[:, None] if x.ndim == 3 else x
        np.testing.assert_array_equal(data.images[split], x)
        np.testing.assert_array_equal(data.y_train if split == "train" else data.y_test, gen.arrays[f"y_{split}{labels}"])
        got = (data.x_train if split == "train" else data.x_test).numpy()
        np.testing.assert_allclose(got, x.reshape(len(x), -1) / 255.0, rtol=0, atol=1e-7)


def _cache_is_clean(root: Path, name: str) -> None:
    folder = root / name
    left = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != ".lock") if folder.exists() else []
    assert left == [], f"the cache holds {left} after a failed download"


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "stl10"])
def test_download_parse_and_cache(name: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        gen = _serve_dataset(monkeypatch, server, name)
        data = load_dataset({"name": name, "val_fraction": 0.0})
        _assert_matches(data, gen)
        assert data.meta["image_shape"] == list(data.images["train"].shape[1:])
        assert len(server.hits) == len(gen.files)
        # Decoded once: a second load maps the .npy files, and asks the server for nothing.
        again = load_dataset({"name": name, "val_fraction": 0.0, "images": True})
        assert len(server.hits) == len(gen.files)
        assert again.x_train.shape[1:] == gen.arrays["x_train"].shape[1:] if gen.arrays["x_train"].ndim == 4 else True
        assert np.load(cache / name / "decoded" / "x_train.npy", mmap_mode="r").dtype == np.uint8
    # Per-channel mean and std on [0, 1], checked against numpy over the generated train images.
    x = gen.arrays["x_train"].astype(np.float64) / 255
    x = x[:, None] if x.ndim == 3 else x
    np.testing.assert_allclose(data.meta["channel_mean"], x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(data.meta["channel_std"], x.std(axis=(0, 2, 3)), atol=1e-6)
    assert not list((cache / name).glob(".*.part"))


def test_cifar100_coarse_and_stl10_unlabeled(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        gen = _serve_dataset(monkeypatch, server, "cifar100")
        coarse = load_dataset({"name": "cifar100", "coarse": True, "val_fraction": 0.0})
        _assert_matches(coarse, gen, labels="_coarse")
        assert coarse.num_classes == len(np.unique(np.concatenate([gen.arrays["y_train_coarse"], gen.arrays["y_test_coarse"]])))
        stl = _serve_dataset(monkeypatch, server, "stl10")
        data = load_dataset({"name": "stl10", "unlabeled": True, "val_fraction": 0.0})
        np.testing.assert_array_equal(data.images["unlabeled"], stl.arrays["x_unlabeled"])
        assert data.meta["n_unlabeled"] == len(stl.arrays["x_unlabeled"])
        assert len(server.hits) == 2  # one archive each: the unlabelled images come from the cached archive


def test_images_stay_aligned_through_subset_and_val(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        _serve_dataset(monkeypatch, server, "cifar10")
        data = load_dataset({"name": "cifar10", "subset": 20, "val_fraction": 0.25, "standardize": True})
    assert data.images["train"].dtype == np.uint8 and data.images["train"].ndim == 4
    for split in ("train", "val", "test"):
        assert len(data.images[split]) == len(getattr(data, f"y_{split}"))
    val = data.val_as_test()
    np.testing.assert_array_equal(val.images["test"], data.images["val"])
    raw = load_dataset({"name": "cifar10", "subset": 20, "val_fraction": 0.25})
    for split in ("train", "val", "test"):
        flat = getattr(raw, f"x_{split}").numpy()
        np.testing.assert_allclose(flat, raw.images[split].reshape(len(flat), -1) / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("checksum", r"checksum mismatch \(md5 [0-9a-f]{32}, expected [0-9a-f]{32}\)"),
        ("truncate", r"truncated transfer, got \d+ of \d+ bytes"),
        ("404", r"HTTP 404"),
        ("500", r"HTTP 500"),
    ],
)
def test_download_faults_leave_the_cache_clean(fault: str, message: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        _serve_dataset(monkeypatch, server, "mnist")
        route = "/mnist/train-labels-idx1-ubyte.gz"
        status, body = server.routes[route]
        if fault == "checksum":
            server.routes[route] = (200, body[:-1] + bytes([body[-1] ^ 1]))
        elif fault == "truncate":
            server.modes[route] = "truncate"
        else:
            server.routes[route] = (int(fault), b"error")
        with pytest.raises(DataError) as info:
            load_dataset("mnist")
    text = str(info.value)
    assert re.search(message, text), text
    assert "train-labels-idx1-ubyte.gz" in text and "put it at" in text
    # The files fetched before the failure are verified and may stay; the failed one never appears.
    assert not (cache / "mnist" / "train-labels-idx1-ubyte.gz").exists()
    assert not (cache / "mnist" / "decoded").exists()
    assert not list((cache / "mnist").glob(".*.part"))


def test_download_killed_midway(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with serve() as server:
        gen = _serve_dataset(monkeypatch, server, "mnist")
        route = "/mnist/train-images-idx3-ubyte.gz"
        server.modes[route] = "stall"
        info = CATALOG["mnist"]
        script = (
            "import dataclasses, json, sys\n"
            "from icon_bench.data.catalog import CATALOG\n"
            "from icon_bench.data.download import RemoteFile\n"
            "files = tuple(RemoteFile(f['name'], tuple(f['urls']), f['md5'], f['size']) for f in json.loads(sys.argv[1]))\n"
            "CATALOG['mnist'] = dataclasses.replace(CATALOG['mnist'], files=files)\n"
            "from icon_bench.data.vision import load_images\n"
            "load_images('mnist')\n"
        )
        import json

        files = json.dumps([{"name": f.name, "urls": list(f.urls), "md5": f.md5, "size": f.size} for f in info.files])
        proc = subprocess.Popen([sys.executable, "-c", script, files], env=dict(os.environ), stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not list((cache / "mnist").glob(".train-images*.part")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list((cache / "mnist").glob(".train-images*.part")), "the download never started"
        finally:
            proc.kill()
            proc.wait()
        assert not (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()
        assert not (cache / "mnist" / "decoded").exists()
        # The next load removes the dead process's temporary file and finishes the download.
        server.modes.clear()
        data = load_dataset({"name": "mnist", "val_fraction": 0.0})
    _assert_matches(data, gen)
    assert not list((cache / "mnist").glob(".*.part"))


def test_offline_names_each_missing_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICON_BENCH_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    text = str(info.value)
    assert "offline (ICON_BENCH_OFFLINE is set)" in text
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in text
    assert "c58f30108f718f92721af3b95e74349a" in text
    assert f"put it at {cache / 'cifar10' / 'cifar-10-python.tar.gz'}" in text
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    for f in CATALOG["mnist"].files:
        assert f.name in str(info.value) and f.md5 in str(info.value)
    _cache_is_clean(cache, "cifar10")
    _cache_is_clean(cache, "mnist")


def test_mirrors_keep_checksums(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        gen = _serve_dataset(monkeypatch, server, "fashion_mnist")
        # The canonical URL is dead; the environment's mirror serves DATASET/FILE.
        info = CATALOG["fashion_mnist"]
        dead = tuple(type(f)(f.name, (server.url + "/gone/" + f.name,), f.md5, f.size) for f in info.files)
        monkeypatch.setitem(CATALOG, "fashion_mnist", type(info)(**{**info.__dict__, "files": dead}))
        monkeypatch.setenv("ICON_BENCH_MIRROR", server.url)
        data = load_dataset({"name": "fashion_mnist", "val_fraction": 0.0})
        _assert_matches(data, gen)
        assert all(h.startswith("/fashion_mnist/") for h in server.hits)
        # A suite's `mirror:` option: a folder of files; a bad file there is still refused.
        gen2 = make_mnist(np.random.default_rng(1))
        publish(server, "mnist", gen)  # the wrong files for these checksums
        monkeypatch.setitem(CATALOG, "mnist", patched_info("mnist", gen2, server.url + "/elsewhere"))
        with pytest.raises(DataError, match="checksum mismatch"):
            load_dataset({"name": "mnist", "mirror": server.url + "/mnist/"})
        _cache_is_clean(cache, "mnist")


def test_path_reads_archives_and_torchvision_layouts(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ICON_BENCH_OFFLINE", "1")  # a path: needs no network
    rng = np.random.default_rng(3)
    for name in ("mnist", "cifar10", "stl10"):
        gen = MAKERS[name](rng)
        monkeypatch.setitem(CATALOG, name, patched_info(name, gen, "http://127.0.0.1:9"))
        extracted = tmp_path / f"tv-{name}"
        write_tree(extracted, gen.extracted)
        data = load_dataset({"name": name, "path": str(extracted), "val_fraction": 0.0})
        _assert_matches(data, gen)
        assert data.meta["source"].startswith(str(extracted))
        (cache / name / "decoded" / "labelled.json").unlink()  # decode again, from the archives this time
        archives = tmp_path / f"ar-{name}"
        write_tree(archives, gen.files)
        _assert_matches(load_dataset({"name": name, "path": str(archives), "val_fraction": 0.0}), gen)
    # A changed extracted file fails its published checksum.
    (cache / "cifar10" / "decoded" / "labelled.json").unlink()
    bad = tmp_path / "tv-cifar10" / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(bad.read_bytes() + b"x")
    with pytest.raises(DataError, match="test_batch: checksum mismatch"):
        load_dataset({"name": "cifar10", "path": str(tmp_path / "tv-cifar10")})
    with pytest.raises(DataError, match=r"no copy under .*looked in"):
        load_dataset({"name": "cifar100", "path": str(tmp_path)})


def test_cifar_pickles_cannot_run_code(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    gen = MAKERS["cifar10"](np.random.default_rng(0))
    gen.extracted["cifar-10-batches-py/test_batch"] = pickle.dumps({"data": Evil()})
    write_tree(tmp_path, gen.extracted)
    monkeypatch.setitem(CATALOG, "cifar10", patched_info("cifar10", gen, "http://127.0.0.1:9"))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset({"name": "cifar10", "path": str(tmp_path)})


def test_mnist_from_the_shared_file_is_exact(mnist_cache: Path) -> None:
    from conftest import MNIST_PATH

    data = load_dataset({"name": "mnist", "val_fraction": 0.0})
    with np.load(MNIST_PATH) as z:
        np.testing.assert_array_equal(data.images["train"][:, 0], z["x_train"])
        np.testing.assert_array_equal(data.images["test"][:, 0], z["x_test"])
        np.testing.assert_array_equal(data.y_train.numpy(), z["y_train"])
        np.testing.assert_array_equal(data.y_test.numpy(), z["y_test"])
    assert data.meta["channel_mean"] == pytest.approx([0.1307], abs=1e-4)  # the published MNIST mean
    assert data.meta["channel_std"] == pytest.approx([0.3081], abs=1e-4)


def test_labels_ignore_where_the_files_came_from() -> None:
    from icon_bench.data.options import dataset_label

    assert dataset_label({"name": "cifar10", "path": "/data/tv", "mirror": "http://m/"}) == "cifar10"
    assert dataset_label({"name": "cifar100", "coarse": True, "path": "/x", "pca": 50}) == "cifar100(coarse=true)-pca50"
    assert dataset_label({"name": "mnist", "subset": 3000}) == "mnist-subset3000"
    assert dataset_label({"name": "arrays", "path": "/d/mnist.npz"}) == "mnist"  # a file dataset keeps its stem


def test_no_network_names_the_files_to_fetch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: the connection is refused, as without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = MAKERS["cifar10"](np.random.default_rng(0))
    monkeypatch.setitem(CATALOG, "cifar10", patched_info("cifar10", gen, f"http://127.0.0.1:{port}"))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    text = str(info.value)
    assert "cannot connect" in text and "put it at" in text and "icon-bench datasets import cifar10" in text
    _cache_is_clean(cache, "cifar10")


def test_concurrent_loads_decode_once(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two loaders at once (threads, each with its own lock handle, as two processes have): one decodes, one maps."""
    import threading

    from icon_bench.data import vision

    gen = MAKERS["mnist"](np.random.default_rng(0))
    write_tree(tmp_path / "copy", gen.files)
    monkeypatch.setitem(CATALOG, "mnist", patched_info("mnist", gen, "http://127.0.0.1:9"))
    calls = []
    real = vision._decode

    def slow_decode(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # long enough for the other loader to reach the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(vision, "_decode", slow_decode)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(vision.load_images("mnist", path=str(tmp_path / "copy"))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    for arrays, _ in results:
        np.testing.assert_array_equal(arrays["x_train"][:, 0], gen.arrays["x_train"])
    # flatten (the default) and pca work on the image rows as on any vectors.
    data = load_dataset({"name": "mnist", "path": str(tmp_path / "copy"), "pca": 5, "val_fraction": 0})
    assert data.x_train.shape == (30, 5) and "image_shape" not in data.meta


def test_a_corrupt_cached_archive_is_set_aside_and_fetched_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        gen = _serve_dataset(monkeypatch, server, "cifar10")
        (cache / "cifar10").mkdir(parents=True)
        (cache / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
        _assert_matches(load_dataset({"name": "cifar10", "val_fraction": 0.0}), gen)
    assert (cache / "cifar10" / "cifar-10-python.tar.gz.corrupt").read_bytes() == b"not the archive"
    assert len(server.hits) == 1
