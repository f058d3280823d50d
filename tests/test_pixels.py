"""Image rows kept uint8 (data/pixels.py): mapped from the decoded cache, converted per batch to the values of before."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from vision_files import tiny_copy

from icon_bench.data import load_dataset
from icon_bench.data.decoded import DecodedCache
from icon_bench.data.pixels import Pixels
from icon_bench.train.trainer import TrainData


def test_a_second_load_maps_the_cache_and_parses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icon_bench.data import formats, vision

    spec = {"name": "cifar10", **tiny_copy("cifar10", tmp_path, monkeypatch), "val_fraction": 0}
    first = load_dataset(spec)

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was parsed again")

    monkeypatch.setattr(vision, "_decode", refuse)
    monkeypatch.setattr(vision, "read_cifar", refuse)
    monkeypatch.setattr(formats, "read_cifar", refuse)
    mapped: list[dict[str, np.ndarray]] = []
    real_read = DecodedCache.read

    def spy(self, part):
        found = real_read(self, part)
        mapped.append(found[0])
        return found

    monkeypatch.setattr(DecodedCache, "read", spy)
    second = load_dataset(spec)
    assert len(mapped) == 1 and all(isinstance(a, np.memmap) for a in mapped[0].values())
    rows = second.stored("train")
    assert rows.dtype == torch.uint8 and "_floats" not in second.__dict__  # nothing converted on load
    # The rows are the mapped file's pages themselves, not a copy.
    assert np.shares_memory(rows.numpy(), mapped[0]["x_train"])
    assert np.shares_memory(second.images["train"], mapped[0]["x_train"])
    assert second.meta["content_hash"] == first.meta["content_hash"]
    np.testing.assert_array_equal(second.x_train.numpy(), first.x_train.numpy())


def test_rows_read_as_before_and_batches_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = tiny_copy("cifar10", tmp_path, monkeypatch)
    data = load_dataset({"name": "cifar10", **params, "val_fraction": 0.2})
    raw = data.images["train"].reshape(len(data.images["train"]), -1)
    # Exactly numpy's float32 division, as the rows were converted on load before.
    np.testing.assert_array_equal(data.x_train.numpy(), np.divide(raw, np.float32(255.0), dtype=np.float32))
    std = load_dataset({"name": "cifar10", **params, "val_fraction": 0.2, "standardize": True})
    assert std.stored("train").dtype == torch.uint8
    x = raw / 255.0
    mean, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    for split in ("train", "val", "test"):
        flat = getattr(data, f"x_{split}").numpy().astype(np.float64)
        np.testing.assert_allclose(getattr(std, f"x_{split}").numpy(), (flat - mean) / sd, rtol=0, atol=1e-5)
    # Off the CPU the conversion reads a table: every value the same as the CPU's division.
    values = torch.arange(256, dtype=torch.uint8)
    np.testing.assert_array_equal(std.pixels.table[values.long()].numpy(), Pixels()(values).numpy())
    np.testing.assert_array_equal(Pixels()(values).numpy(), np.arange(256, dtype=np.float32) / np.float32(255.0))
    # What the trainer draws (uint8 rows, converted per batch) equals the rows read whole.
    train = TrainData(std.stored("train"), std.y_train, pixels=std.pixels)
    idx = torch.tensor([3, 0, 7, 7, 1])
    np.testing.assert_array_equal(train.inputs(train.x[idx]).numpy(), std.x_train[idx].numpy())
    # images=True: (n, c, h, w) rows, the same values.
    img = load_dataset({"name": "cifar10", **params, "val_fraction": 0.2, "images": True})
    assert img.stored("train").shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(img.x_train.reshape(len(img.x_train), -1).numpy(), data.x_train.numpy())


def test_pickling_and_val_as_test_keep_uint8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_dataset({"name": "cifar10", **tiny_copy("cifar10", tmp_path, monkeypatch), "standardize": True})
    before = data.x_test.clone()  # converted once: kept in data, never shipped
    assert "_floats" in data.__dict__
    back = pickle.loads(pickle.dumps(data))
    assert "_floats" not in back.__dict__ and back.stored("test").dtype == torch.uint8
    np.testing.assert_array_equal(back.x_test.numpy(), before.numpy())
    # data.images views the rows: pickled once (not beside them), views of the rows again after.
    pixels = sum(data.stored(s).numel() for s in ("train", "val", "test"))
    assert len(pickle.dumps(data)) < 1.5 * pixels  # the rows, standardize's mean and std (float32 per feature)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(back.images[split], data.images[split])
        assert np.shares_memory(back.images[split], back.stored(split).numpy())
    val = data.val_as_test()
    assert val.stored("test") is data.stored("val") and "_floats" not in val.__dict__
    assert len(val.stored("val")) == 0 and val.stored("val").dtype == torch.uint8
    np.testing.assert_array_equal(val.x_test.numpy(), data.x_val.numpy())


def test_uint8_rows_travel_out_of_band_as_ray_ships_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    data = load_dataset({"name": "cifar10", **tiny_copy("cifar10", tmp_path, monkeypatch), "images": True})
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 6  # x and y of the three splits; data.images goes as notes on x
    frozen = []
    for b in buffers:  # read-only, as Ray's object store hands them over
        arr = np.frombuffer(b.raw(), dtype=np.uint8)
        arr.flags.writeable = False
        frozen.append(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = pickle.loads(blob, buffers=frozen)
        rows = back.x_train  # converted in the trial, from the shared uint8 buffer
    assert back.stored("train").data_ptr() == frozen[0].ctypes.data
    assert np.shares_memory(back.images["train"], frozen[0])
    np.testing.assert_array_equal(rows.numpy(), data.x_train.numpy())
