"""`imagefolder` on a PNG tree; `icon-bench datasets` and `datasets import`; dry runs of suites whose data is not cached."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vision_files import make_cifar, make_mnist, patched_info, write_tree

from icon_bench.cli import main
from icon_bench.data import load_dataset
from icon_bench.data.catalog import CATALOG
from icon_bench.errors import DataError

REPO = Path(__file__).resolve().parents[1]
PIL = pytest.importorskip("PIL.Image", reason="imagefolder reads images with Pillow (the [vision] extra)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ICON_BENCH_DATA", str(root))
    monkeypatch.setenv("ICON_BENCH_OFFLINE", "1")
    return root


def _png_tree(root: Path, rng: np.random.Generator, classes: list[str], per_class: dict[str, int], size: int = 8):
    """root/<split>/<class>/<i>.png of random RGB pixels; returns split -> (images (n, 3, s, s), labels)."""
    out = {}
    for split, n in per_class.items():
        xs, ys = [], []
        for label, name in enumerate(sorted(classes)):
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                path = root / split / name / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                PIL.fromarray(pixels).save(path)
                xs.append(pixels.transpose(2, 0, 1))
                ys.append(label)
        out[split] = (np.stack(xs), np.asarray(ys))
    return out


def test_imagefolder_reads_the_tree(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    made = _png_tree(root, np.random.default_rng(0), ["zebra", "apple", "moon"], {"train": 4, "val": 2})
    data = load_dataset({"name": "imagefolder", "path": str(root), "val_fraction": 0.0, "images": True})
    assert data.meta["classes"] == ["apple", "moon", "zebra"] and data.meta["splits"] == {"train": "train", "test": "val"}
    for split, key in (("train", "train"), ("val", "test")):
        x, y = made[split]
        np.testing.assert_array_equal(data.images[key], x)
        np.testing.assert_array_equal(getattr(data, f"y_{key}").numpy(), y)
        np.testing.assert_allclose(getattr(data, f"x_{key}").numpy(), x / 255.0, atol=1e-7)
    assert data.meta["channel_mean"] == pytest.approx((made["train"][0] / 255.0).mean(axis=(0, 2, 3)), abs=1e-6)
    # A class-list file keeps a subset (ImageNet-100 style), indexed in sorted order.
    (tmp_path / "keep.txt").write_text("zebra\napple\n")
    sub = load_dataset({"name": "imagefolder", "path": str(root), "class_file": str(tmp_path / "keep.txt"), "val_fraction": 0})
    assert sub.meta["classes"] == ["apple", "zebra"] and sub.num_classes == 2 and len(sub.y_train) == 8
    # A wrong class name says where, with a suggestion.
    (tmp_path / "bad.txt").write_text("apple\nzebr\n")
    with pytest.raises(DataError, match=r"bad.txt:2: class 'zebr' has no folder .*did you mean 'zebra'"):
        load_dataset({"name": "imagefolder", "path": str(root), "class_file": str(tmp_path / "bad.txt")})


def test_imagefolder_sizes(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _png_tree(root, np.random.default_rng(1), ["a", "b"], {"train": 2, "test": 2})
    PIL.fromarray(np.zeros((5, 7, 3), np.uint8)).save(root / "train" / "b" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png: image is 7x5, but .* give the dataset `size: N`"):
        load_dataset({"name": "imagefolder", "path": str(root)})
    data = load_dataset({"name": "imagefolder", "path": str(root), "size": 4, "grey": True, "val_fraction": 0})
    assert data.images["train"].shape == (5, 1, 4, 4) and data.meta["image_shape"] == [1, 4, 4]
    with pytest.raises(DataError, match="no folder 'val'"):
        load_dataset({"name": "imagefolder", "path": str(root), "test_split": "val"})


def test_imagefolder_decodes_once_and_again_when_the_tree_changes(cache: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from icon_bench.data import imagefolder

    root = tmp_path / "tree"
    made = _png_tree(root, np.random.default_rng(2), ["a", "b"], {"train": 3, "test": 2})
    decoded: list[int] = []
    real = imagefolder._decode

    def counting(paths, *args, **kwargs):
        decoded.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(imagefolder, "_decode", counting)
    spec = {"name": "imagefolder", "path": str(root), "val_fraction": 0, "images": True}
    load_dataset(spec)
    assert decoded == [6, 4]  # train and test, once
    again = load_dataset(spec)
    assert decoded == [6, 4]  # the second load maps the cached .npy
    np.testing.assert_array_equal(again.images["train"], made["train"][0])
    # Another size is another cache entry; so is an edited image (its size or mtime changes).
    load_dataset({**spec, "size": 4})
    assert decoded == [6, 4, 6, 4]
    edited = np.zeros((8, 8, 3), np.uint8)
    PIL.fromarray(edited).save(root / "train" / "b" / "001.png")
    fresh = load_dataset(spec)
    assert decoded == [6, 4, 6, 4, 6, 4]
    np.testing.assert_array_equal(fresh.images["train"][4], edited.transpose(2, 0, 1))
    load_dataset(spec)
    assert len(decoded) == 6


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_datasets_list_and_import(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli("datasets", capsys=capsys)
    assert code == 0
    for name in CATALOG:
        assert re.search(rf"^{name}\s.*\sno$", out, flags=re.M), out
    assert "CC BY-SA 3.0" in out and "170.5 MB" in out and str(cache) in out
    # An .npz with MNIST's keys pre-fills the cache; the dataset then loads offline.
    gen = make_mnist(np.random.default_rng(0), n_train=60000, n_test=10000)
    np.savez(tmp_path / "m.npz", **gen.arrays)
    code, out = _cli("datasets", "import", "mnist", str(tmp_path / "m.npz"), capsys=capsys)
    assert code == 0 and "decoded arrays written" in out
    data = load_dataset({"name": "mnist", "val_fraction": 0, "subset": 50})
    assert data.images["train"].shape == (50, 1, 28, 28)
    # A folder of archives (checked against their MD5s) is copied into the cache and decoded.
    cifar = make_cifar(np.random.default_rng(1), hundred=False)
    write_tree(tmp_path / "dl", cifar.files)
    monkeypatch.setitem(CATALOG, "cifar10", patched_info("cifar10", cifar, "http://127.0.0.1:9"))
    code, out = _cli("datasets", "import", "cifar10", str(tmp_path / "dl"), capsys=capsys)
    assert code == 0 and (cache / "cifar10" / "cifar-10-python.tar.gz").is_file()
    code, out = _cli("datasets", "--json", capsys=capsys)
    assert '"name": "cifar10"' in out and out.count('"cached": "yes"') == 2
    # Mistakes: a name, a missing file, an .npz for a dataset that has none.
    code, out = _cli("datasets", "import", "mnsit", "x", capsys=capsys)
    assert code == 2 and "did you mean 'mnist'" in out
    code, out = _cli("datasets", "import", "mnist", str(tmp_path / "nope.npz"), capsys=capsys)
    assert code == 2 and "nope.npz: no such file or folder" in out
    code, out = _cli("datasets", "import", "cifar100", str(tmp_path / "m.npz"), capsys=capsys)
    assert code == 2 and "an .npz can pre-fill mnist or fashion_mnist" in out


def test_dry_run_of_uncached_data_says_what_it_downloads(tmp_path: Path) -> None:
    """From a folder other than the repo, with an empty cache and no network: every suite's dry run exits 0."""
    env = {**os.environ, "ICON_BENCH_DATA": str(tmp_path / "empty"), "ICON_BENCH_OFFLINE": ""}
    suite = REPO / "suites" / "supervised_quick.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "icon_bench.cli", "run", str(suite), "--dry-run", "--results", str(tmp_path / "r")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"data: mnist is not cached: the run will download 11.6 MB \(4 file\(s\), MD5-checked\) "
                     r"from https://ossci-datasets.s3.amazonaws.com/mnist/", proc.stdout), proc.stdout
    assert not (tmp_path / "empty" / "mnist").exists()  # a dry run downloads nothing


def test_no_suite_reads_outside_the_repository() -> None:
    for path in sorted((REPO / "suites").glob("*.yaml")):
        assert "../" not in path.read_text(), f"{path.name} refers to a file outside the repository"
