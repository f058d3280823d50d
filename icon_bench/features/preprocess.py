"""Image preprocessing in torch alone (no torchvision): resize, centre crop, normalise; and the augmented views."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from icon_bench.errors import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocess", "ViewAugment", "as_images", "pixel_scale", "to_uint8_range"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODES = ("bicubic", "bilinear")


class ImagePreprocess:
    """uint8-range images (B, C, H, W) -> the backbone's input: shorter side to `resize`, centre crop
    `crop` x `crop`, scaled to [0, 1], normalised by `mean` / `std`; grey images are repeated to 3 channels.

    torchvision's Resize(256, BICUBIC, antialias=True) + CenterCrop(224) + Normalize, written with
    ``F.interpolate(mode="bicubic", antialias=True)`` so the package needs no torchvision.
    """

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
    ) -> None:
        if interpolation not in _MODES:
            raise ValueError(f"ImagePreprocess: interpolation must be one of {_MODES}, got {interpolation!r}")
        if not 0 < crop <= resize:
            raise ValueError(f"ImagePreprocess: need 0 < crop <= resize, got crop={crop}, resize={resize}")
        self.resize, self.crop, self.interpolation = int(resize), int(crop), interpolation
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def settings(self) -> dict[str, Any]:
        """JSON-ready description (it goes into the manifest, so a change re-embeds)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "antialias": True,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode=self.interpolation, antialias=True, align_corners=False)
            x = x.clamp(0.0, 255.0)  # bicubic overshoots; PIL clips too
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[:, :, top : top + self.crop, left : left + self.crop] / 255.0
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


class ViewAugment:
    """I-Con's view augmentation of uint8-range images: random resized crop, flip, colour jitter, grey, blur.

    Crop, flip, jitter and grey are `icon_bench.data.augment.Augmenter`'s; a Gaussian blur (sigma in
    `sigma`, with probability `blur_p`, kernel about a tenth of the side, as SimCLR) follows.
    Every draw comes from the generator passed in, so a seeded batch repeats exactly.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.25, 1.0),
        flip: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        grey_p: float = 0.2,
        blur_p: float = 0.5,
        sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        from icon_bench.data.augment import Augmenter

        if not 0.0 <= blur_p <= 1.0 or not 0 < sigma[0] <= sigma[1]:
            raise ValueError("ViewAugment: blur_p must be in [0, 1] and 0 < sigma min <= max")
        self.base = Augmenter(
            crop="resized", scale=scale, flip=flip, brightness=brightness, contrast=contrast, jitter_p=jitter_p, grey_p=grey_p
        )
        self.blur_p, self.sigma = float(blur_p), (float(sigma[0]), float(sigma[1]))

    def settings(self) -> dict[str, Any]:
        base = self.base.settings()
        keep = ("crop", "scale", "ratio", "flip", "brightness", "contrast", "jitter_p", "grey_p")
        return {**{k: base[k] for k in keep}, "blur_p": self.blur_p, "blur_sigma": list(self.sigma)}

    @torch.no_grad()
    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = self.base(images.float() / 255.0, generator)
        return (self._blur(x, generator) * 255.0).clamp(0.0, 255.0)

    def _blur(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Per-sample Gaussian blur as one grouped, separable convolution over the batch."""
        b, c, h, w = x.shape
        use = torch.rand(b, generator=g) < self.blur_p
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * torch.rand(b, generator=g)
        radius = max(1, int(0.05 * min(h, w)))
        if self.blur_p == 0 or not bool(use.any()):
            return x
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        identity = (t == 0).float().expand(b, -1)
        kernel = torch.where(use[:, None], kernel, identity).to(x)
        weight = kernel.repeat_interleave(c, 0)  # (b * c, 2r + 1): one filter per sample's channel
        flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, weight.view(b * c, 1, 1, -1), groups=b * c)
        flat = F.conv2d(flat, weight.view(b * c, 1, -1, 1), groups=b * c)
        return flat.view(b, c, h, w)


def as_images(x: Any, image_shape: Sequence[int] | None, where: str) -> np.ndarray | Tensor:
    """A dataset split as images (n, C, H, W) in its own storage: (n, H, W) gains a channel, flat rows
    take `image_shape` from the dataset's meta; anything else is refused (a backbone needs pictures)."""
    shape = tuple(x.shape)
    if len(shape) == 3:
        return x[:, None]
    if len(shape) == 4 and shape[1] in (1, 3):
        return x
    if len(shape) == 4 and shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2) if isinstance(x, np.ndarray) else x.permute(0, 3, 1, 2)
    if len(shape) == 2 and image_shape is not None and math.prod(image_shape) == shape[1]:
        return x.reshape(len(x), *image_shape)
    raise DataError(
        f"{where}: a backbone embeds images (n, C, H, W) or (n, H, W), but the rows have shape {shape[1:]} "
        "and the dataset declares no image_shape"
    )


def pixel_scale(x: np.ndarray | Tensor) -> float:
    """What takes a split's values to [0, 255]: 1 for uint8, 255 for float images in [0, 1] (as
    `DataSplits` holds them), 1 for float images already in 0..255. Decided once per split, not per batch."""
    if x.dtype in (np.uint8, torch.uint8):
        return 1.0
    return 255.0 if float(x.max()) <= 1.0 + 1e-6 else 1.0


def to_uint8_range(batch: np.ndarray | Tensor, scale: float) -> Tensor:
    """A batch of images as float32 in [0, 255] (`scale` from `pixel_scale` of its split)."""
    # A copy of the batch's rows (the split may be a read-only memory map); it becomes float anyway.
    t = torch.from_numpy(np.array(batch)) if isinstance(batch, np.ndarray) else batch
    t = t.float()
    return t * scale if scale != 1.0 else t
