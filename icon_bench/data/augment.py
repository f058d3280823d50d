"""Batched on-device augmentation: image crops, flips, colour jitter and grey; noise and feature dropout for vectors.

Everything is pure torch on the batch's device, one call per batch, with all randomness drawn from
the ``torch.Generator`` the caller passes, so a seeded CPU run repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augmenter", "StoredViews", "augmenter_for"]

_CROPS = ("resized", "pad", "none")


class Augmenter:
    """A batch augmentation ``(x, generator) -> x'`` for images (B, C, H, W) or vectors (B, D).

    Images: random crop (``crop="resized"``: a random area fraction in `scale` and aspect ratio in
    `ratio`, resized back; ```"pad"``: shift by up to `pad` pixels, filling with the batch's lowest value, black for [0, 1] images; ``"none"``),
    horizontal flip with probability `flip` (0 by default: digits are not mirror-symmetric), colour
    jitter (brightness and contrast factors in [1 - b, 1 + b], applied with probability `jitter_p`),
    and random grey with probability `grey_p` (3-channel only). Values are clamped to the range the
    input batch spans, so standardised data stays valid.
    Vectors: additive Gaussian noise of std `noise` and feature dropout (each feature zeroed with
    probability `feature_dropout`, no rescaling). Flat rows are treated as images when
    `image_shape` (c, h, w) is given.
    """

    def __init__(
        self,
        crop: str = "resized",
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        pad: int = 2,
        flip: float = 0.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        grey_p: float = 0.2,
        noise: float = 0.1,
        feature_dropout: float = 0.1,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        if crop not in _CROPS:
            raise ValueError(f"Augmenter: crop must be one of {_CROPS}, got {crop!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"Augmenter: scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"Augmenter: ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        for name, p in (("flip", flip), ("jitter_p", jitter_p), ("grey_p", grey_p), ("feature_dropout", feature_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Augmenter: {name} is a probability, got {p}")
        if noise < 0 or brightness < 0 or contrast < 0 or pad < 0:
            raise ValueError("Augmenter: noise, brightness, contrast and pad must be >= 0")
        if image_shape is not None and len(image_shape) != 3:
            raise ValueError(f"Augmenter: image_shape must be (c, h, w), got {tuple(image_shape)}")
        self.crop, self.scale, self.ratio, self.pad = crop, tuple(scale), tuple(ratio), int(pad)
        self.flip, self.brightness, self.contrast = float(flip), float(brightness), float(contrast)
        self.jitter_p, self.grey_p = float(jitter_p), float(grey_p)
        self.noise, self.feature_dropout = float(noise), float(feature_dropout)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None

    def settings(self) -> dict[str, Any]:
        """The parameters, JSON-ready (for result rows)."""
        return {
            "crop": self.crop,
            "scale": list(self.scale),
            "ratio": list(self.ratio),
            "pad": self.pad,
            "flip": self.flip,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "jitter_p": self.jitter_p,
            "grey_p": self.grey_p,
            "noise": self.noise,
            "feature_dropout": self.feature_dropout,
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    def __repr__(self) -> str:
        return f"Augmenter({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"

    @torch.no_grad()
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(
                f"Augmenter: the generator is on {generator.device} but the batch on {x.device}; "
                "create it with torch.Generator(device=x.device)"
            )
        if x.dim() == 4:
            return self.images(x, generator)
        if x.dim() == 2 and self.image_shape is not None:
            if math.prod(self.image_shape) != x.shape[1]:
                raise ValueError(f"Augmenter: image_shape {self.image_shape} does not fit rows of {x.shape[1]} values")
            return self.images(x.reshape(len(x), *self.image_shape), generator).reshape(x.shape)
        if x.dim() == 2:
            return self.vectors(x, generator)
        raise ValueError(f"Augmenter: expected (B, C, H, W) images or (B, D) vectors, got shape {tuple(x.shape)}")

    # -- images ------------------------------------------------------------------------------
    def images(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch of images (B, C, H, W); every sample gets its own random draw."""
        lo, hi = x.amin(), x.amax()
        out = self._geometry(x, generator)
        out = self._jitter(out, generator)
        if x.shape[1] == 3 and self.grey_p > 0:
            grey = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            use = self._rand(len(x), generator, x) < self.grey_p
            out = torch.where(use.view(-1, 1, 1, 1), grey.expand_as(out), out)
        return out.clamp(lo, hi)

    def _rand(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)

    def _geometry(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        """Crop and flip as one affine warp per sample (a single grid_sample for the batch)."""
        b = len(x)
        if self.crop == "pad" and self.pad > 0:
            x = self._pad_crop(x, g)
        if self.crop != "resized" and self.flip == 0:
            return x
        if self.crop == "resized":
            area = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand(b, g, x)
            lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
            aspect = torch.exp(lo + (hi - lo) * self._rand(b, g, x))
            # Side fractions of the crop relative to the image; clamped so the box stays inside.
            sw = torch.sqrt(area * aspect).clamp(max=1.0)
            sh = torch.sqrt(area / aspect).clamp(max=1.0)
            cx = (1 - sw) * (2 * self._rand(b, g, x) - 1)
            cy = (1 - sh) * (2 * self._rand(b, g, x) - 1)
        else:
            sw = sh = torch.ones(b, device=x.device, dtype=x.dtype)
            cx = cy = torch.zeros(b, device=x.device, dtype=x.dtype)
        flip = torch.where(self._rand(b, g, x) < self.flip, -1.0, 1.0).to(x.dtype)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = sh, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _pad_crop(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        """Pad by `pad` and crop back at a random integer offset (the CIFAR crop)."""
        b, c, h, w = x.shape
        p = self.pad
        # Fill with the batch minimum rather than 0, so standardised images also pad with "black";
        # built from the tensor (not a Python float) to avoid a host sync per batch.
        padded = x.amin().expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g, device=x.device)
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None]).view(b, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None]).view(b, 1, 1, w)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        # Advanced indexing gathers every sample's window at once: (b, h, w, c) -> (b, c, h, w).
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].squeeze(1).permute(0, 3, 1, 2).contiguous()

    def _jitter(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        if self.jitter_p == 0 or (self.brightness == 0 and self.contrast == 0):
            return x
        b = len(x)
        use = (self._rand(b, g, x) < self.jitter_p).to(x.dtype).view(-1, 1, 1, 1)
        bright = 1 + self.brightness * (2 * self._rand(b, g, x) - 1)
        contr = 1 + self.contrast * (2 * self._rand(b, g, x) - 1)
        bright = 1 + use * (bright.view(-1, 1, 1, 1) - 1)
        contr = 1 + use * (contr.view(-1, 1, 1, 1) - 1)
        out = x * bright
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        return (out - mean) * contr + mean

    # -- vectors -----------------------------------------------------------------------------
    def vectors(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Gaussian noise plus feature dropout for (B, D) rows."""
        out = x
        if self.noise > 0:
            out = out + self.noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.feature_dropout > 0:
            keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= self.feature_dropout
            out = out * keep
        return out


def augmenter_for(meta: dict, x_shape: Sequence[int], **overrides: Any) -> Augmenter:
    """An Augmenter with defaults suited to a dataset: image_shape from meta, flips on for colour images.

    `x_shape` is the per-row shape of the features (e.g. ``data.x_train.shape[1:]``); `overrides`
    are Augmenter parameters and win over the defaults.
    """
    params: dict[str, Any] = {}
    shape = tuple(x_shape)
    image = shape if len(shape) == 3 else (tuple(meta["image_shape"]) if meta.get("image_shape") else None)
    if image is not None and len(shape) != 3:
        params["image_shape"] = image
    if image is not None and image[0] == 3:
        params["flip"] = 0.5  # natural colour images are mirror-symmetric; digits are not
    params.update(overrides)
    return Augmenter(**params)


class StoredViews:
    """Views drawn from stored ones: each row's view is one of its K augmented views embedded ahead of
    time (a feature cache's ``views_train``, (n, K, d)), picked uniformly per row and call.

    Called as ``(x, generator, index=rows)``: rows at or beyond n (points that have no stored views,
    e.g. test rows appended for a lookup model) keep their own features.
    """

    takes_index = True

    def __init__(self, views: Tensor) -> None:
        if views.dim() != 3:
            raise ValueError(f"StoredViews: views must be (n, K, d), got shape {tuple(views.shape)}")
        self.views = views

    def settings(self) -> dict[str, Any]:
        return {"stored_views": int(self.views.shape[1])}

    def __repr__(self) -> str:
        return f"StoredViews(n={self.views.shape[0]}, K={self.views.shape[1]})"

    @torch.no_grad()
    def __call__(self, x: Tensor, generator: torch.Generator | None = None, *, index: Tensor) -> Tensor:
        n, k = self.views.shape[:2]
        rows = index.reshape(-1).cpu()
        pick = torch.randint(0, k, (len(rows),), generator=generator, device=generator.device if generator else "cpu")
        has = rows < n
        out = x.clone()
        if bool(has.any()):
            # Gathered on the host where the (memory-mapped) views live, then moved to the batch's device.
            got = self.views[rows[has], pick.cpu()[has]].to(x.device, x.dtype)
            out[has.to(x.device)] = got
        return out
