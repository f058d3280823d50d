"""Augmentation: seeded determinism, that inputs change, shapes and value ranges, and each transform alone."""

from __future__ import annotations

import pytest
import torch

from icon_bench.data.augment import Augmenter, augmenter_for


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("shape", "params"),
    [
        ((6, 1, 28, 28), {}),
        ((6, 3, 32, 32), {"flip": 0.5, "crop": "pad", "pad": 4}),
        ((6, 64), {"image_shape": (1, 8, 8)}),
        ((6, 10), {}),
    ],
)
def test_seeded_runs_repeat_and_change_the_input(shape: tuple, params: dict) -> None:
    x = torch.rand(shape)
    aug = Augmenter(**params)
    a, b = aug(x, _gen(1)), aug(x, _gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(aug(x, _gen(2)), a)
    assert (a - x).abs().mean() > 1e-3
    # Each sample gets its own draw: two copies of one image come out different.
    twins = aug(x[:1].repeat(2, *([1] * (x.dim() - 1))), _gen(3))
    assert not torch.equal(twins[0], twins[1])
    if len(shape) == 4 or "image_shape" in params:
        assert a.min() >= x.min() and a.max() <= x.max()


def test_identity_when_everything_is_off() -> None:
    x = torch.rand(4, 3, 16, 16)
    aug = Augmenter(crop="none", flip=0.0, jitter_p=0.0, grey_p=0.0)
    assert torch.equal(aug(x, _gen()), x)


def test_flip_alone_mirrors_exactly() -> None:
    x = torch.rand(8, 1, 5, 7)
    out = Augmenter(crop="none", flip=1.0, jitter_p=0.0, grey_p=0.0)(x, _gen())
    torch.testing.assert_close(out, x.flip(-1))


def test_pad_crop_shifts_by_whole_pixels() -> None:
    x = torch.rand(16, 1, 10, 10)
    out = Augmenter(crop="pad", pad=2, jitter_p=0.0, grey_p=0.0)(x, _gen())
    for img, src in zip(out[:, 0], x[:, 0]):
        padded = torch.nn.functional.pad(src, (2, 2, 2, 2), value=float(x.min()))
        windows = [padded[dy : dy + 10, dx : dx + 10] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(img, w) for w in windows)


def test_grey_makes_channels_equal() -> None:
    x = torch.rand(4, 3, 8, 8)
    out = Augmenter(crop="none", jitter_p=0.0, grey_p=1.0)(x, _gen())
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(out[:, c], lum)


def test_vector_noise_and_dropout() -> None:
    x = torch.ones(2000, 50)
    drop = Augmenter(noise=0.0, feature_dropout=0.3)(x, _gen())
    assert set(drop.unique().tolist()) == {0.0, 1.0}
    assert abs(float((drop == 0).float().mean()) - 0.3) < 0.01
    noisy = Augmenter(noise=0.5, feature_dropout=0.0)(x, _gen())
    assert abs(float((noisy - x).std()) - 0.5) < 0.01


def test_augmenter_for_reads_meta_and_bad_params() -> None:
    flat = augmenter_for({"image_shape": [1, 8, 8]}, (64,))
    assert flat.image_shape == (1, 8, 8) and flat.flip == 0.0
    colour = augmenter_for({}, (3, 32, 32), crop="pad")
    assert colour.flip == 0.5 and colour.crop == "pad" and colour.image_shape is None
    with pytest.raises(ValueError, match="crop"):
        Augmenter(crop="random")
    with pytest.raises(ValueError, match="flip is a probability"):
        Augmenter(flip=2.0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator is on cpu"):
            Augmenter()(torch.rand(2, 1, 8, 8, device="cuda"), _gen())
    with pytest.raises(ValueError, match="does not fit"):
        Augmenter(image_shape=(1, 8, 8))(torch.rand(2, 63), _gen())
