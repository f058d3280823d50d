"""Built-in models (linear, mlp, cnn, resnet, lookup), each built as ``factory(in_shape, out_dim, **params)``.

Every model has an attribute ``takes``: ``"inputs"`` when ``forward`` reads the batch's input tensor,
``"index"`` when it reads the batch's dataset indices (the non-parametric ``lookup`` table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from icon_bench.hooks.specs import hookimpl

__all__ = ["CNN", "Linear", "Lookup", "MLP", "ResNet", "cnn", "linear", "lookup", "mlp", "pca_init", "resnet"]


def _shape(in_shape: Sequence[int] | int, what: str) -> tuple[int, ...]:
    shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{what}: in_shape must be positive sizes, got {in_shape!r}")
    return shape


def _check_out(out_dim: int, what: str) -> None:
    if int(out_dim) < 1:
        raise ValueError(f"{what}: out_dim must be >= 1, got {out_dim}")


class Linear(nn.Module):
    """Flatten, then one affine map."""

    takes = "inputs"

    def __init__(self, in_shape: Sequence[int], out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.in_shape = _shape(in_shape, "linear")
        _check_out(out_dim, "linear")
        self.fc = nn.Linear(math.prod(self.in_shape), out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Flatten, `layers` hidden blocks (Linear, optional BatchNorm, ReLU, optional dropout), a linear output."""

    takes = "inputs"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        hidden: int = 512,
        layers: int = 2,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_shape = _shape(in_shape, "mlp")
        _check_out(out_dim, "mlp")
        if layers < 0 or hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp: need layers >= 0, hidden >= 1, 0 <= dropout < 1; got {layers}, {hidden}, {dropout}")
        blocks: list[nn.Module] = []
        width = math.prod(self.in_shape)
        for _ in range(layers):
            # No bias before BatchNorm: it would be cancelled by the mean subtraction anyway.
            blocks.append(nn.Linear(width, hidden, bias=not batchnorm))
            if batchnorm:
                blocks.append(nn.BatchNorm1d(hidden))
            blocks.append(nn.ReLU(inplace=True))
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            width = hidden
        blocks.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def _image_shape(in_shape: tuple[int, ...], image_shape: Sequence[int] | None, what: str) -> tuple[int, int, int]:
    """(c, h, w) the conv net sees: in_shape itself for images, image_shape for flat vectors."""
    if len(in_shape) == 3:
        if image_shape is not None and tuple(image_shape) != in_shape:
            raise ValueError(f"{what}: image_shape {tuple(image_shape)} disagrees with in_shape {in_shape}")
        return in_shape  # type: ignore[return-value]
    if len(in_shape) == 2 and image_shape is None:
        return (1, *in_shape)  # (h, w) grey images
    if image_shape is None:
        raise ValueError(f"{what}: vector input {in_shape} needs image_shape=(c, h, w) to be seen as an image")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(in_shape):
        raise ValueError(f"{what}: image_shape {shape} must be (c, h, w) with {math.prod(in_shape)} values")
    return shape  # type: ignore[return-value]


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class CNN(nn.Module):
    """A small conv net: three 3x3 conv blocks (width, 2 width, 4 width), pooling while the map is large, global average pool, linear head."""

    takes = "inputs"

    def __init__(
        self, in_shape: Sequence[int], out_dim: int, width: int = 32, image_shape: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        shape = _shape(in_shape, "cnn")
        _check_out(out_dim, "cnn")
        self.image_shape = _image_shape(shape, image_shape, "cnn")
        c, h, _ = self.image_shape
        layers: list[nn.Module] = []
        channels = [c, width, 2 * width, 4 * width]
        for i in range(3):
            layers += _conv_bn(channels[i], channels[i + 1])
            # Halve the map until about 4x4 is left: 32->16->8, 28->14->7, 8->4.
            if h >= 8 and i < 2:
                layers.append(nn.MaxPool2d(2))
                h //= 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(len(x), *self.image_shape)))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


_RESNET_STAGES = {8: (1, 1, 1), 10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ResNet(nn.Module):
    """A CIFAR-style ResNet (3x3 stem, no max-pool) with basic blocks; width halves the usual 64 by default."""

    takes = "inputs"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        depth: int = 18,
        width: int = 32,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        shape = _shape(in_shape, "resnet")
        _check_out(out_dim, "resnet")
        if depth not in _RESNET_STAGES:
            raise ValueError(f"resnet: depth must be one of {sorted(_RESNET_STAGES)}, got {depth}")
        self.image_shape = _image_shape(shape, image_shape, "resnet")
        layers: list[nn.Module] = _conv_bn(self.image_shape[0], width)
        c = width
        for i, n_blocks in enumerate(_RESNET_STAGES[depth]):
            c_out = width * 2**i
            for j in range(n_blocks):
                layers.append(_BasicBlock(c, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c
        self.head = nn.Linear(c, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(len(x), *self.image_shape)))


class Lookup(nn.Module):
    """One free vector per data point (non-parametric SNE / t-SNE); ``forward(index)`` returns rows of the table."""

    takes = "index"

    def __init__(self, num_points: int, out_dim: int, init: Tensor | None = None, init_std: float = 1e-4) -> None:
        super().__init__()
        if num_points < 1:
            raise ValueError(f"lookup: num_points must be >= 1, got {num_points}")
        _check_out(out_dim, "lookup")
        if init is None:
            weight = torch.randn(num_points, out_dim) * init_std
        else:
            weight = torch.as_tensor(init, dtype=torch.float32).detach().clone()
            if tuple(weight.shape) != (num_points, out_dim):
                raise ValueError(f"lookup: init has shape {tuple(weight.shape)}, expected ({num_points}, {out_dim})")
        self.weight = nn.Parameter(weight)

    def forward(self, index: Tensor) -> Tensor:
        return self.weight[index]


@torch.no_grad()
def pca_init(x: Tensor, out_dim: int, std: float | None = 1e-4) -> Tensor:
    """The first `out_dim` principal-component scores of `x` (n, ...), float32 (n, out_dim).

    With `std`, rescaled so the first column has that standard deviation (the t-SNE convention,
    as in scikit-learn's init="pca"); std=None keeps the raw scores. Signs are fixed (largest
    loading positive) so the result is reproducible.
    """
    flat = x.reshape(len(x), -1).double()
    if not 1 <= out_dim <= min(flat.shape):
        raise ValueError(f"pca_init: out_dim must be in 1..{min(flat.shape)}, got {out_dim}")
    flat = flat - flat.mean(0)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    comps = vh[:out_dim].T
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    scores = flat @ (comps * signs)
    if std is not None:
        scores = scores / scores[:, 0].std().clamp_min(1e-12) * std
    return scores.float()


def linear(in_shape: tuple[int, ...], out_dim: int, bias: bool = True) -> nn.Module:
    """A linear map of the flattened input."""
    return Linear(in_shape, out_dim, bias=bias)


def mlp(
    in_shape: tuple[int, ...],
    out_dim: int,
    hidden: int = 512,
    layers: int = 2,
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """A multilayer perceptron: `layers` hidden layers of width `hidden`, BatchNorm and ReLU."""
    return MLP(in_shape, out_dim, hidden=hidden, layers=layers, batchnorm=batchnorm, dropout=dropout)


def cnn(
    in_shape: tuple[int, ...], out_dim: int, width: int = 32, image_shape: tuple[int, ...] | None = None
) -> nn.Module:
    """A small conv net for 1- or 3-channel images (8x8 to 32x32); flat input needs image_shape."""
    return CNN(in_shape, out_dim, width=width, image_shape=image_shape)


def resnet(
    in_shape: tuple[int, ...],
    out_dim: int,
    depth: int = 18,
    width: int = 32,
    image_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """A small CIFAR-style ResNet (depth 8, 10, 18 or 34) for 28x28 / 32x32 images."""
    return ResNet(in_shape, out_dim, depth=depth, width=width, image_shape=image_shape)


def lookup(
    in_shape: tuple[int, ...], out_dim: int, num_points: int, init: Tensor | None = None, init_std: float = 1e-4
) -> nn.Module:
    """A table of one learned vector per data point (forward takes dataset indices); init e.g. pca_init(x, out_dim).

    in_shape is accepted for a uniform factory signature and ignored; without init, rows are
    drawn from N(0, init_std^2).
    """
    return Lookup(num_points, out_dim, init=init, init_std=init_std)


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    register("linear", linear)
    register("mlp", mlp)
    register("cnn", cnn)
    register("resnet", resnet)
    register("lookup", lookup)
