"""A Student-t kernel whose scale is learned with the model (a heavy-tailed q for t-SNE-like methods)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from icon_bench.loss import Kernel, KernelError, log_normalise


class LearnableT(Kernel):
    """Student-t (1 + d_ij / (s dof))^(-(dof + 1) / 2) on squared distances, with s = exp(log_scale) learned.

    ``log_scale`` is an ``nn.Parameter``: ICon is a module holding its kernels, so the trainer's
    optimiser updates it with the model. Distances and logs are taken in float32 whatever the input
    dtype (bf16 distances of nearby points cancel to zero).
    """

    def __init__(self, dof: float = 1.0, scale: float = 1.0, include_self: bool = False) -> None:
        super().__init__()
        for what, value in (("dof", dof), ("scale", scale)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise KernelError(f"kernel 'learnable_t': {what} must be a positive number, got {value!r}")
        self.dof = float(dof)
        self.include_self = bool(include_self)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))

    @property
    def scale(self) -> float:
        return float(self.log_scale.detach().exp())

    def forward(self, batch: dict[str, Tensor], key: str = "embeddings") -> Tensor:
        if key not in batch:
            raise KernelError(f"kernel 'learnable_t' needs batch[{key!r}]; the batch has {sorted(batch)}")
        x = batch[key].reshape(batch[key].shape[0], -1).float()
        sq = (x * x).sum(1)
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product instead of an (N, N, D) tensor; the clamp
        # removes tiny negatives from cancellation (and keeps the gradient finite at d = 0, unlike cdist).
        d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
        logits = -0.5 * (self.dof + 1.0) * torch.log1p(d / (self.log_scale.exp() * self.dof))
        if not self.include_self:
            eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
            logits = logits.masked_fill(eye, float("-inf"))
        return log_normalise(logits)

    def extra_repr(self) -> str:
        return f"dof={self.dof}, scale={self.scale:.4g}, include_self={self.include_self}"


def learnable_t(dof: float = 1.0, scale: float = 1.0, include_self: bool = False) -> LearnableT:
    """Student-t kernel with a learned scale: (1 + d / (scale * dof))^(-(dof + 1) / 2), scale = exp(log_scale)."""
    return LearnableT(dof=dof, scale=scale, include_self=include_self)
