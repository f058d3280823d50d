"""Frozen features: backbones (torch.hub against a local fixture), `icon-bench embed`, the cache and its manifest,
the `features` dataset, TEMI / TURTLE importers. No network, no weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from icon_bench import cli
from icon_bench.data import knn_graph, load_dataset
from icon_bench.errors import DataError, IconBenchError
from icon_bench.features.backbones import Backbone, torchhub, weights_checksum
from icon_bench.features.cache import verify_cache
from icon_bench.features.embed import embed_dataset
from icon_bench.hooks.registry import get_registry

HUB = Path(__file__).parent / "fixtures" / "hub"
TINY = {"name": "torchhub", "model": "tiny_vit", "repo": str(HUB), "source": "local"}


@pytest.fixture
def images(tmp_path: Path) -> dict:
    """An `arrays` .npz of uint8 colour images (40 train, 12 test, 3 classes): the dataset spec to embed."""
    rng = np.random.default_rng(0)
    path = tmp_path / "imgs.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (40, 3, 24, 20), dtype=np.uint8),
        y_train=rng.integers(0, 3, 40),
        x_test=rng.integers(0, 256, (12, 3, 24, 20), dtype=np.uint8),
        y_test=rng.integers(0, 3, 12),
    )
    return {"name": "arrays", "path": str(path), "flatten": False}


def _embed(images: dict, out: Path, **kw) -> Path:
    opts = {"batch_size": 8, "shard_size": 8, "knn": 5, "progress": False, **kw}
    return embed_dataset(images, kw.pop("backbone", TINY), out, **{k: v for k, v in opts.items() if k != "backbone"})


def test_register_backbones_builtins_and_missing_extras() -> None:
    reg = get_registry()
    assert {"torchhub", "timm", "open_clip"} <= set(reg.names("backbone"))
    for name in ("timm", "open_clip"):
        try:
            __import__(name)
        except Exception:
            with pytest.raises(IconBenchError, match=r"backbone '\w+' needs .*icon-bench\[vision\]"):
                reg.create("backbone", name)


def test_torchhub_local_fixture_loads_a_frozen_vit_with_a_stable_checksum() -> None:
    b = torchhub("tiny_vit", repo=str(HUB), source="local")
    m1, m2 = b.load(), b.load()
    assert weights_checksum(m1) == weights_checksum(m2)
    assert not any(p.requires_grad for p in m1.parameters()) and not m1.training
    x = torch.randint(0, 256, (3, 3, 30, 40), dtype=torch.uint8)
    z = m1(b.preprocess(x))
    assert z.shape == (3, 16) and torch.isfinite(z).all()
    assert b.describe()["preprocessing"]["crop"] == 224 and b.describe()["ref"] == "local"
    fresh = torchhub("tiny_vit", repo=str(HUB), source="local", pretrained=False).load()
    assert weights_checksum(fresh) != weights_checksum(m1)


def test_preprocessing_matches_pil_resize_and_centre_crop() -> None:
    from PIL import Image

    from icon_bench.features.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

    yy, xx = np.mgrid[0:300, 0:400]
    img = np.stack([128 + 100 * np.sin(xx / 23.0), 128 + 100 * np.cos(yy / 17.0), 128 + 120 * np.sin((xx + yy) / 9.0)], -1)
    img = img.clip(0, 255).astype(np.uint8)
    # PIL: shorter side to 256 (bicubic), centre crop 224, /255, ImageNet normalisation: torchvision's recipe.
    pil = np.asarray(Image.fromarray(img).resize((341, 256), Image.BICUBIC), dtype=np.float32)
    top, left = (256 - 224) // 2, (341 - 224) // 2
    ref = (pil[top : top + 224, left : left + 224] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    got = ImagePreprocess()(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert got.shape == ref.shape
    # PIL rounds to uint8 after resizing: up to 1/255 of range, about 0.02 after dividing by std.
    assert np.abs(got - ref).max() < 0.03 and np.abs(got - ref).mean() < 0.005


def test_embed_writes_a_cache_whose_graph_equals_knn_graph(images: dict, tmp_path: Path) -> None:
    out = _embed(images, tmp_path / "cache", dtype="float32")
    manifest = verify_cache(out)
    feats = np.load(out / "features_train.npy", mmap_mode="r")
    assert feats.shape == (40, 16) and feats.dtype == np.float32
    assert np.load(out / "features_test.npy").shape == (12, 16)
    expected = knn_graph(torch.from_numpy(np.array(feats)), 5, "cosine").numpy()
    assert np.array_equal(np.load(out / "knn_train.npy"), expected)
    assert manifest["graph"] == {"method": "exact"}  # 40 rows: below the approximate search's threshold
    ident = manifest["identity"]
    assert ident["backbone"]["plugin"] == "torchhub" and len(ident["backbone"]["weights_sha256"]) == 16
    assert ident["dataset"]["splits"] == {"train": 40, "test": 12} and ident["dtype"] == "float32"
    assert manifest["label"] == "imgs-tiny-vit" and manifest["files"]["features_train.npy"]["shape"] == [40, 16]
    # The features are the model's on the preprocessed images, in order.
    raw = np.load(images["path"])["x_train"][:5]
    b = torchhub("tiny_vit", repo=str(HUB), source="local")
    direct = b.load()(b.preprocess(torch.from_numpy(raw))).numpy()
    assert np.allclose(feats[:5], direct, atol=1e-5)


def test_same_manifest_reuses_and_a_changed_preprocessing_never_collides(
    images: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICON_BENCH_CACHE", str(tmp_path / "cache"))
    first = embed_dataset(images, TINY, batch_size=8, knn=3, progress=False)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    again = embed_dataset(images, TINY, batch_size=16, workers=1, knn=3, progress=False)
    assert again == first and (first / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    named = embed_dataset(images, TINY, first, knn=3, name="pictures", progress=False)  # a new name only relabels
    assert named == first and verify_cache(first)["label"] == "pictures-tiny-vit"
    other = embed_dataset(images, {**TINY, "crop": 224, "resize": 240}, batch_size=8, knn=3, progress=False)
    assert other != first and other.parent == first.parent
    assert json.loads((other / "manifest.json").read_text())["key"] != json.loads((first / "manifest.json").read_text())["key"]
    # An explicit folder holding another identity's cache is refused, not overwritten.
    with pytest.raises(DataError, match="holds another feature cache"):
        embed_dataset(images, TINY, other, knn=3, progress=False)


def test_a_tampered_cache_is_refused(images: dict, tmp_path: Path) -> None:
    out = _embed(images, tmp_path / "c")
    load_dataset({"name": "features", "path": str(out)})  # fine as written
    feats = out / "features_train.npy"
    data = bytearray(feats.read_bytes())
    data[-1] ^= 0xFF
    feats.write_bytes(bytes(data))
    with pytest.raises(DataError, match="content no longer matches the manifest"):
        load_dataset({"name": "features", "path": str(out)})
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["identity"]["backbone"]["model"] = "dinov2_vitb14"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="manifest was edited"):
        load_dataset({"name": "features", "path": str(out)})
    with pytest.raises(DataError, match="no manifest.json"):
        load_dataset({"name": "features", "path": str(tmp_path)})


def test_embed_resumes_after_a_kill(images: dict, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "icon_bench.cli", "embed", "arrays", "--backbone", "torchhub",
           "--set", f"dataset.path={images['path']}", "--set", "dataset.flatten=false",
           *[f"--set=backbone.{k}={v}" for k, v in TINY.items() if k != "name"],
           "--batch-size", "4", "--shard-size", "8", "--knn", "5", "--views", "1", "-o", str(out), "--no-progress"]
    env = {**os.environ, "ICON_BENCH_EMBED_SHARD_DELAY": "0.7"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob(".partial-*/*-features-*.npy"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(out.glob(".partial-*/*-features-*.npy"))
    assert 2 <= len(shards) < 7, [p.name for p in shards]  # 5 train + 2 test shards in all
    assert not (out / "manifest.json").exists()
    with pytest.raises(DataError, match="resume"):
        load_dataset({"name": "features", "path": str(out)})
    resumed = _embed(images, out, batch_size=4, views=1)
    whole = _embed(images, tmp_path / "whole", batch_size=4, views=1)
    for name in ("features_train", "features_test", "views_train", "knn_train", "labels_test"):
        assert np.array_equal(np.load(resumed / f"{name}.npy"), np.load(whole / f"{name}.npy")), name
    assert not list(out.glob(".partial-*"))


def test_features_dataset_feeds_the_graph_and_the_stored_views(images: dict, tmp_path: Path) -> None:
    from icon_bench.data.augment import StoredViews
    from icon_bench.run.execution.trial import run_trial
    from icon_bench.train.build import _make_augment

    out = _embed(images, tmp_path / "c", views=3)
    views = np.load(out / "views_train.npy")
    assert views.shape == (40, 3, 16) and not np.allclose(views[:, 0], np.load(out / "features_train.npy"))
    data = load_dataset({"name": "features", "path": str(out), "val_fraction": 0})
    assert data.knn_train.shape == (40, 5) and data.views_train.shape == (40, 3, 16)
    aug = _make_augment("auto", data, views=2)
    assert isinstance(aug, StoredViews)
    idx = torch.tensor([0, 1, 39])
    drawn = aug(data.x_train[idx], torch.Generator().manual_seed(0), index=idx)
    for row, i in zip(drawn, idx.tolist()):  # each drawn view is one of that row's stored views
        assert any(torch.allclose(row, data.views_train[i, v].float()) for v in range(3))
    spec = {"method": "debiased_infonce_clustering", "dataset": {"name": "features", "path": str(out), "val_fraction": 0},
            "settings": {"epochs": 1, "batch_size": 16, "views": 2}}
    row = run_trial(spec)
    assert row["status"] == "ok", row["error"]
    assert row["info"]["graph"]["source"] == "dataset" and row["info"]["graph"]["metric"] == "cosine"
    # A val split changes the train rows: views follow them, the graph is dropped and meta says so.
    split = load_dataset({"name": "features", "path": str(out), "val_fraction": 0.2})
    assert split.knn_train is None and "dropped" in split.meta["knn_graph"]
    assert len(split.views_train) == len(split.x_train) == 32
    assert load_dataset({"name": "features", "path": str(out), "val_fraction": 0, "knn": 3}).knn_train.shape == (40, 3)


def test_label_comes_from_the_manifest_and_matches_references(images: dict, tmp_path: Path) -> None:
    from icon_bench.report.references import load_references

    hub = torchhub("tiny_vit", repo=str(HUB), source="local")
    dinov2 = Backbone("torchhub", "dinov2_vitb14", hub._loader, hub.preprocess, repo="facebookresearch/dinov2",
                      tag="dinov2-vitb14")
    out = _embed(images, tmp_path / "c", backbone=dinov2, name="imagenet1k")
    data = load_dataset({"name": "features", "path": str(out), "subset": 20})
    assert data.meta["label"] == "imagenet1k-dinov2-vitb14-subset20"
    full = load_dataset({"name": "features", "path": str(out)})
    keys = {r.key for r in load_references()}
    assert full.meta["label"] == "imagenet1k-dinov2-vitb14" in keys


def test_grey_images_and_flat_rows_with_an_image_shape_embed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "grey.npz", x=rng.integers(0, 256, (12, 16, 16), dtype=np.uint8), y=np.arange(12) % 2)
    out = embed_dataset({"name": "arrays", "path": str(tmp_path / "grey.npz"), "test_size": 0.25}, TINY, tmp_path / "g",
                        knn=2, progress=False)
    assert np.load(out / "features_train.npy").shape == (9, 16)
    with pytest.raises(DataError, match="a backbone embeds images"):
        embed_dataset("iris", TINY, tmp_path / "i", progress=False)
    with pytest.raises(DataError, match="apply when the features are loaded"):
        embed_dataset({"name": "digits", "subset": 10}, TINY, tmp_path / "d", progress=False)


def test_import_temi_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, xt = torch.randn(30, 8), torch.randn(10, 8)
    y, yt = torch.from_numpy(rng.integers(0, 4, 30)), torch.from_numpy(rng.integers(0, 4, 10))
    graph = torch.cat([torch.arange(30)[:, None], knn_graph(x, 4, "cosine")], 1)  # TEMI lists the row itself first
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for name, t in (("embeddings", x), ("label", y), ("knn", graph)):
        torch.save(t, tmp_path / "train" / f"{name}.pt")
    torch.save(xt, tmp_path / "test" / "embeddings.pt")
    torch.save(yt, tmp_path / "test" / "label.pt")
    assert cli.main(["import-features", "temi", str(tmp_path / "train"), "--test", str(tmp_path / "test"),
                     "-o", str(tmp_path / "out"), "--label", "cifar10-dino-vitb16"]) == 0
    data = load_dataset({"name": "features", "path": str(tmp_path / "out"), "val_fraction": 0})
    assert torch.equal(data.x_train, x) and torch.equal(data.y_test, yt.long())
    assert torch.equal(data.knn_train, graph[:, 1:]) and data.meta["label"] == "cifar10-dino-vitb16"
    torch.save({"not": "a tensor"}, tmp_path / "train" / "label.pt")
    with pytest.raises(DataError, match="expected one tensor"):
        cli_import = __import__("icon_bench.features.importers", fromlist=["import_temi"])
        cli_import.import_temi(tmp_path / "train", tmp_path / "out2")


def test_import_turtle_representations(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reps, labels = tmp_path / "representations" / "dinov2_vitb14", tmp_path / "labels"
    reps.mkdir(parents=True)
    labels.mkdir()
    x, xv = rng.normal(size=(25, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    np.save(reps / "cifar10_train.npy", x)
    np.save(reps / "cifar10_val.npy", xv)
    np.save(labels / "cifar10_train.npy", rng.integers(0, 3, 25))
    np.save(labels / "cifar10_val.npy", rng.integers(0, 3, 9))
    assert cli.main(["import-features", "turtle", str(reps), "--dataset", "cifar10", "--knn", "4", "-o", str(tmp_path / "o")]) == 0
    data = load_dataset({"name": "features", "path": str(tmp_path / "o"), "val_fraction": 0})
    assert np.array_equal(data.x_test.numpy(), xv) and data.meta["label"] == "cifar10-dinov2_vitb14"
    assert torch.equal(data.knn_train, knn_graph(torch.from_numpy(x), 4, "cosine"))
    assert cli.main(["import-features", "turtle", str(reps), "--dataset", "cifar100", "-o", str(tmp_path / "p")]) == 2


@pytest.mark.slow
def test_embed_on_a_local_ray_cluster_equals_the_local_run(images: dict, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = _embed(images, tmp_path / "ray", executor="ray", views=1)
    finally:
        ray.shutdown()
    local = _embed(images, tmp_path / "local", views=1)
    for name in ("features_train", "features_test", "views_train", "knn_train"):
        assert np.array_equal(np.load(on_ray / f"{name}.npy"), np.load(local / f"{name}.npy")), name


def test_check_backbone_passes_the_fixture_and_catches_a_trainable_or_shape_changing_one() -> None:
    from icon_bench import testing

    good = torchhub("tiny_vit", repo=str(HUB), source="local")
    testing.check_backbone(good)

    class Trainable(Backbone):
        def load(self, device="cpu"):
            return torch.nn.Linear(3, 2).eval()

    bad = Trainable("t", "t", lambda: None, good.preprocess)
    with pytest.raises(testing.ConformanceError, match="frozen model"):
        testing.check_backbone(bad)
    keeps_size = Backbone("k", "k", good._loader, lambda x: x.float())  # grey stays 1 channel, sizes vary
    with pytest.raises(testing.ConformanceError, match="features"):
        testing.check_backbone(keeps_size)


@pytest.mark.parametrize("suite", ["imagenet_clustering", "cifar_clustering"])
def test_feature_suites_dry_run_says_what_is_missing_and_how_to_make_it(suite: str, tmp_path: Path) -> None:
    import io
    import shutil

    from icon_bench.runner import run_suite

    # A copy outside the repository: its feature folders are surely missing there.
    (tmp_path / "suites").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shutil.copy(Path(__file__).parents[1] / "suites" / f"{suite}.yaml", tmp_path / "suites")
    out = io.StringIO()
    assert run_suite(tmp_path / "suites" / f"{suite}.yaml", dry_run=True, out=out) == 0
    text = out.getvalue()
    assert text.count("no such file") == (3 if suite.startswith("imagenet") else 6)
    assert "make it with: icon-bench embed" in text and "--backbone dinov2_vitb14" in text
    assert "to run" in text  # the plan is still shown
    with pytest.raises(Exception, match="no such file"):
        run_suite(tmp_path / "suites" / f"{suite}.yaml", out=io.StringIO(), report=False)


def test_timm_and_open_clip_backbones_take_their_models_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapters against stand-in modules (the real packages need torchvision): data config and transform
    settings become the preprocessing, open_clip's encode_image the forward."""
    import types

    from icon_bench.features.backbones import open_clip, timm

    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    fake_timm = types.SimpleNamespace(
        __version__="9.9",
        create_model=lambda name, pretrained, num_classes: net,
        data=types.SimpleNamespace(resolve_data_config=lambda args, model: {
            "input_size": (3, 192, 192), "crop_pct": 0.875, "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}),
    )
    monkeypatch.setitem(sys.modules, "timm", fake_timm)
    b = timm("vit_small_patch14_dinov2")
    pre = b.describe()["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["interpolation"], pre["mean"]) == (219, 192, "bilinear", [0.5] * 3)
    assert b.describe()["ref"] == "9.9" and b.load()(b.preprocess(torch.zeros(1, 3, 50, 50, dtype=torch.uint8))).shape == (1, 3)

    class Clip(torch.nn.Module):
        visual = types.SimpleNamespace(image_size=160)

        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3)) * 2

    fake_clip = types.SimpleNamespace(
        create_model_and_transforms=lambda model, pretrained: (Clip(), None, None),
        get_model_preprocess_cfg=lambda m: {"size": 160, "mean": (0.4, 0.4, 0.4), "std": (0.3, 0.3, 0.3)},
    )
    monkeypatch.setitem(sys.modules, "open_clip", fake_clip)
    c = open_clip("ViT-B-16", "laion2b_s34b_b88k")
    x = c.preprocess(torch.full((1, 3, 20, 30), 255, dtype=torch.uint8))
    assert x.shape == (1, 3, 160, 160) and c.tag == "clip-vit-b-16-laion2b_s34b_b88k"
    assert torch.allclose(c.load()(x), torch.full((1, 3), 2 * (1 - 0.4) / 0.3), atol=1e-4)


def test_a_backbone_that_cannot_load_says_what_and_from_where(tmp_path: Path) -> None:
    b = torchhub("no_such_model", repo=str(HUB), source="local")
    with pytest.raises(DataError, match=r"cannot load 'no_such_model' from .*hub@local"):
        b.load()
    assert cli.main(["embed", "digits", "--set", "dataset.images=true", "--backbone", "torchhub", "--set",
                     f"backbone.repo={tmp_path}", "--set", "backbone.source=local", "--set", "backbone.model=x",
                     "-o", str(tmp_path / "o"), "--no-progress"]) == 2


def _clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_a_cache_graph_above_the_threshold_is_approximate_with_its_recall_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icon_bench.data import ann
    from icon_bench.data import graph as graph_mod
    from icon_bench.data.ann import recall_at_k
    from icon_bench.features.finish import write_cache

    if not ann.available():
        pytest.skip("faiss (the ann extra) is not installed")
    monkeypatch.setattr(graph_mod, "APPROX_ROWS", 500)  # 1,500 rows stand for a large cache
    x = _clustered(1500)
    arrays = {"features_train": x, "labels_train": np.arange(1500) % 3, "features_test": x[:10], "labels_test": np.arange(10) % 3}
    manifest = write_cache(tmp_path / "c", arrays, {"name": "t"}, {"label": "t"}, knn=5)
    record = manifest["graph"]
    assert record["method"] == "faiss-ivf-flat" and record["recall@5"] >= 0.95 and record["recall_sample"] == 1000
    saved = torch.from_numpy(np.load(tmp_path / "c" / "knn_train.npy"))
    exact = knn_graph(torch.from_numpy(x), 5, "cosine")
    assert recall_at_k(saved, exact) >= 0.9  # over every row, checked here independently of the sample
    data = load_dataset({"name": "features", "path": str(tmp_path / "c"), "val_fraction": 0})
    assert data.meta["knn_graph"]["search"] == record
    # Below the threshold, or without faiss, the graph is exact and says so.
    monkeypatch.setattr(graph_mod, "APPROX_ROWS", 10_000)
    assert write_cache(tmp_path / "d", arrays, {"name": "t"}, {"label": "t"}, knn=5)["graph"] == {"method": "exact"}
    assert np.array_equal(np.load(tmp_path / "d" / "knn_train.npy"), exact.numpy())
    monkeypatch.setattr(graph_mod, "APPROX_ROWS", 500)
    monkeypatch.setattr(ann, "available", lambda: False)
    with pytest.warns(UserWarning, match="exact O"):
        assert write_cache(tmp_path / "e", arrays, {"name": "t"}, {"label": "t"}, knn=5)["graph"] == {"method": "exact"}


def test_a_feature_cache_shape_is_known_at_plan_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The memory check reads a feature cache's headers and manifest: spectral on it is refused when the
    # suite loads (its eigensolver basis: 20 float64 vectors of each of the 3,000 rows), k-means is not.
    rng = np.random.default_rng(0)
    reps, labels = tmp_path / "representations" / "dinov2_vitb14", tmp_path / "labels"
    reps.mkdir(parents=True)
    labels.mkdir()
    np.save(reps / "cifar10_train.npy", rng.normal(size=(2500, 20)).astype(np.float32))
    np.save(reps / "cifar10_val.npy", rng.normal(size=(500, 20)).astype(np.float32))
    np.save(labels / "cifar10_train.npy", rng.integers(0, 3, 2500))
    np.save(labels / "cifar10_val.npy", rng.integers(0, 3, 500))
    assert cli.main(["import-features", "turtle", str(reps), "--dataset", "cifar10", "--knn", "4", "-o", str(tmp_path / "f")]) == 0
    from icon_bench.run.suite.data_check import _features_shape

    assert _features_shape(tmp_path / "f") == (3000, (20,), 3)
    assert _features_shape(tmp_path / "nothing") is None
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\ndatasets: [{{name: features, path: {tmp_path / 'f'}, val_fraction: 0}}]\n"
                     "grid: {method: [kmeans, spectral]}\n")
    argv = ["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]
    capsys.readouterr()
    assert cli.main([*argv, "--max-memory", "1M"]) == 2
    err = capsys.readouterr().err
    assert "method 'spectral' needs about" in err and "eigensolver 480 kB" in err and "'kmeans'" not in err
    assert cli.main([*argv, "--max-memory", "1G"]) == 0
