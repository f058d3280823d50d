"""Pieces a recipe wraps around its model and loss: a cosine head, multiple heads, a cached full-batch p."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from icon_bench.errors import TrialError
from icon_bench.loss.kernel import Kernel
from icon_bench.loss.objective import ICon
from icon_bench.loss.structure import SparseRows

if TYPE_CHECKING:
    pass


class CosineHead(nn.Module):
    """``trunk`` features, L2-normalised, against L2-normalised prototypes, divided by a temperature."""

    def __init__(self, trunk: nn.Module, dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise TrialError(f"settings.head_temperature must be > 0, got {temperature}")
        self.trunk = trunk
        self.takes = getattr(trunk, "takes", "inputs")
        self.temperature = temperature
        self.prototypes = nn.Parameter(torch.randn(out_dim, dim) / dim**0.5)

    def forward(self, x: Tensor) -> Tensor:
        z = nn.functional.normalize(self.trunk(x), dim=1)
        return z @ nn.functional.normalize(self.prototypes, dim=1).T / self.temperature


class MultiHead(nn.Module):
    """The loss summed over `heads` output slices of one model (shared trunk, TEMI-style heads).

    Each head is a separate clustering of the same trunk; after training, each head's mean loss
    over fresh batches of the training data (:meth:`evaluate_heads`) picks the head reported: the
    lowest loss, an unsupervised choice (TEMI's). Restarts are the usual cure for the poor local
    optima of a clustering loss; heads give them at the cost of one trunk.
    """

    def __init__(self, loss: nn.Module, heads: int) -> None:
        super().__init__()
        self.loss, self.heads = loss, int(heads)

    def head(self, z: Tensor, h: int) -> Tensor:
        width = z.shape[1] // self.heads
        return z[:, h * width : (h + 1) * width]

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        z = batch["embeddings"]
        if z.shape[1] % self.heads:
            raise TrialError(f"{self.heads} heads need an output width divisible by {self.heads}, got {z.shape[1]}")
        return self.per_head(batch).sum()

    def per_head(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Each head's loss on this batch, (heads,)."""
        z = batch["embeddings"]
        if not isinstance(self.loss, ICon):
            return torch.stack([self.loss({**batch, "embeddings": self.head(z, h)}) for h in range(self.heads)])
        # p does not read the embeddings, so every head shares one p per batch.
        shared = self.loss.prepare_p(batch)
        if self.loss.supports_heads and isinstance(shared, SparseRows) and shared.has_uniform == self.loss.p.has_uniform_share:
            # All heads as one (heads, N, width) tensor: one pass instead of a loop over heads.
            stacked = z.reshape(z.shape[0], self.heads, -1).transpose(0, 1)
            values, support = self.loss.rows_and_support({**batch, "embeddings": stacked}, shared)
            return self.loss.mean_over_support(values, support)
        return torch.stack([self.loss({**batch, "embeddings": self.head(z, h)}, shared) for h in range(self.heads)])

    @torch.no_grad()
    def evaluate_heads(
        self, model: nn.Module, data: Any, settings: Any, *, seed: int, augment: Any = None, min_batches: int = 30
    ) -> Tensor:
        """Each head's mean loss over at least `min_batches` batches drawn as in training, model frozen."""
        from icon_bench.train.trainer import make_batch

        model.eval()
        n = data.x.shape[0]
        bs = n if settings.batch_size is None else min(settings.batch_size, n)
        g = torch.Generator(device=data.x.device)
        g.manual_seed(seed + 7919)  # a stream of batches unlike training's, still reproducible
        takes_index = getattr(model, "takes", "inputs") == "index"
        total = torch.zeros(self.heads, device=data.x.device)
        count = 0
        while count < min_batches:
            perm = torch.randperm(n, generator=g, device=data.x.device)
            for anchors in perm.tensor_split(max(1, -(-n // bs))):
                if anchors.numel() < 2:
                    continue
                batch = make_batch(data, anchors, settings, g, augment)
                batch["embeddings"] = model(batch["index"] if takes_index else batch["inputs"]).float()
                total += self.per_head(batch)
                count += 1
        return (total / count).cpu()


class OneHead(nn.Module):
    """One head's slice of a multi-head model's output (what is embedded once the head is chosen)."""

    def __init__(self, model: nn.Module, heads: MultiHead, head: int) -> None:
        super().__init__()
        self.model, self.heads, self.index = model, heads, int(head)
        self.takes = getattr(model, "takes", "inputs")

    def forward(self, x: Tensor) -> Tensor:
        return self.heads.head(self.model(x), self.index)


class FullBatchCache(Kernel):
    """A p kernel on fixed inputs evaluated once: with full batches (a permutation of all points each
    step) later steps read the cached matrix permuted, instead of re-running e.g. perplexity calibration.

    Only used when every batch holds each point exactly once (batch_size None, no views, no drawn
    neighbours), where permuting the cached matrix is exact.
    """

    def __init__(self, kernel: Kernel) -> None:
        super().__init__()
        self.kernel = kernel
        self._full: Tensor | None = None
        self._order = torch.empty(0, dtype=torch.long)

    @property  # type: ignore[override]
    def rectangular(self) -> bool:
        return bool(self.kernel.rectangular)

    @property  # type: ignore[override]
    def include_self(self) -> bool:
        return bool(self.kernel.include_self)

    def forward(self, batch: Mapping[str, Tensor], key: str = "inputs") -> Tensor:
        idx = batch["index"]
        if self._full is None or self._full.shape[0] != idx.numel():
            log_p = self.kernel(batch, key).detach()
            full = torch.empty_like(log_p)
            full[idx.unsqueeze(1), idx.unsqueeze(0)] = log_p
            self._full, self._order = full, idx
            return log_p
        if idx is self._order or (idx.data_ptr() == self._order.data_ptr() and idx.shape == self._order.shape):
            return self._full  # the trainer's fixed full-batch order: no gather
        return self._full[idx.unsqueeze(1), idx.unsqueeze(0)]
