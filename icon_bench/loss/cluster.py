"""Kernels over classes or clusters: soft cluster assignments and class prototypes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from icon_bench.loss.kernel import Kernel, KernelError, _positive
from icon_bench.loss.structure import Batch, RowBlocks, _get, _mask_self, _vectors, log_normalise


class Cluster(Kernel):
    """Cluster kernel sum_c phi_ic phi_jc / sum_k phi_kc with phi = softmax(cluster logits); self excluded."""

    def __init__(self, include_self: bool = False) -> None:
        super().__init__()
        self.include_self = bool(include_self)

    @property
    def supports_row_blocks(self) -> bool:
        return True

    @staticmethod
    def floor(dtype: torch.dtype) -> float:
        """The smallest q_ij the kernel gives before renormalising (eps^2 of the dtype)."""
        return torch.finfo(dtype).eps ** 2

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        logits = _vectors(_get(batch, key, "cluster"))
        phi = torch.softmax(logits, 1)
        weighted = phi / phi.sum(0).clamp_min(torch.finfo(phi.dtype).tiny)
        n = phi.shape[0]

        def block(a: int, b: int) -> Tensor:
            # Rows including self already sum to 1. q is floored at eps^2 of the dtype (float32:
            # 1.4e-14), like the eps of the reference implementation: heads confident on disjoint
            # clusters keep a finite log q, and the 1 / q of the log's gradient stays bounded.
            lq = (weighted[a:b] @ phi.T).clamp_min(self.floor(phi.dtype)).log()
            if self.exclude_self:
                lq = _mask_self(lq, a)
            return log_normalise(lq)

        return RowBlocks(n, n, self.exclude_self, block)


class Prototype(Kernel):
    """Data-to-class softmax(z_i . w_c / T) over classes with learnable prototypes w: gives cross-entropy."""

    rectangular = True

    def __init__(self, num_classes: int, dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        if int(num_classes) < 1 or int(dim) < 1:
            raise KernelError(f"kernel 'prototype': num_classes and dim must be >= 1, got {num_classes}, {dim}")
        self.temperature = _positive(temperature, "temperature", "prototype")
        self.weight = nn.Parameter(torch.randn(int(num_classes), int(dim)) / math.sqrt(int(dim)))

    @property
    def supports_row_blocks(self) -> bool:
        return True

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        z = _vectors(_get(batch, key, "prototype"))
        if z.shape[1] != self.weight.shape[1]:
            raise KernelError(
                f"kernel 'prototype': batch[{key!r}] has dimension {z.shape[1]}, prototypes have "
                f"dim={self.weight.shape[1]}"
            )
        w = self.weight.to(z.dtype)

        def block(a: int, b: int) -> Tensor:
            return torch.log_softmax(z[a:b] @ w.T / self.temperature, 1)

        return RowBlocks(z.shape[0], w.shape[0], False, block)
