"""`icon-bench embed` on the image datasets: a generated CIFAR-10 from the loopback server and a generated image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vision_files import MAKERS, patched_info, publish, serve

from icon_bench.data import load_dataset
from icon_bench.data.catalog import CATALOG
from icon_bench.features.backbones import torchhub
from icon_bench.features.cache import verify_cache
from icon_bench.features.embed import embed_dataset

HUB = Path(__file__).parent / "fixtures" / "hub"
TINY = {"name": "torchhub", "model": "tiny_vit", "repo": str(HUB), "source": "local"}


def _direct(images: np.ndarray) -> np.ndarray:
    """The fixture backbone on raw uint8 images, without the embed pipeline."""
    b = torchhub("tiny_vit", repo=str(HUB), source="local")
    return b.load()(b.preprocess(torch.from_numpy(np.ascontiguousarray(images)))).numpy()


def test_embed_a_generated_cifar10_served_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICON_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("ICON_BENCH_OFFLINE", raising=False)
    with serve() as server:
        gen = MAKERS["cifar10"](np.random.default_rng(0))
        publish(server, "cifar10", gen)
        monkeypatch.setitem(CATALOG, "cifar10", patched_info("cifar10", gen, server.url))
        out = embed_dataset("cifar10", TINY, tmp_path / "f", views=1, batch_size=4, shard_size=8, knn=3, progress=False)
    manifest = verify_cache(out)
    assert manifest["label"] == "cifar10-tiny-vit"
    assert manifest["identity"]["dataset"]["splits"] == {"train": len(gen.arrays["y_train"]), "test": len(gen.arrays["y_test"])}
    feats = np.load(out / "features_train.npy")
    # The raw uint8 pixels were embedded, in order: equal to the backbone on the generated images.
    np.testing.assert_allclose(feats, _direct(gen.arrays["x_train"]), atol=2e-3)  # float16 storage
    data = load_dataset({"name": "features", "path": str(out), "val_fraction": 0})
    assert torch.equal(data.y_test, torch.from_numpy(gen.arrays["y_test"]).long())
    assert data.views_train.shape == (len(feats), 1, 16) and data.knn_train.shape == (len(feats), 3)


def test_embed_a_generated_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = {}
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                path = tmp_path / "tree" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
                pixels[(split, cls, i)] = img
    spec = {"name": "imagefolder", "path": str(tmp_path / "tree"), "test_split": "val", "images": True}
    out = embed_dataset(spec, TINY, tmp_path / "f", batch_size=4, knn=2, name="pets", progress=False)
    manifest = verify_cache(out)
    assert manifest["label"] == "pets-tiny-vit" and manifest["identity"]["dataset"]["splits"] == {"train": 8, "test": 4}
    raw = load_dataset({**spec, "val_fraction": 0})
    np.testing.assert_allclose(np.load(out / "features_test.npy"), _direct(raw.images["test"]), atol=2e-3)
    labels = np.load(out / "labels_train.npy")
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
