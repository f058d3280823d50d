"""Kernels on features (softmax over pairwise similarities): Gaussian, Student-t, cosine."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from icon_bench.loss.kernel import Kernel, KernelError, _check_metric, _positive
from icon_bench.loss.structure import (
    NEG_INF,
    Batch,
    RowBlocks,
    _allowed,
    _block_rows,
    _get,
    _mask_self,
    _pair_dist,
    _sq_dist,
    _vectors,
    log_normalise,
)


# --------------------------------------------------------------------------------------------
# kernels on features (softmax type)
# --------------------------------------------------------------------------------------------
class _Pairwise(Kernel):
    """Softmax over columns of logits s(x_i, x_j); subclasses give the logits for a block of rows."""

    supports_row_blocks = True  # type: ignore[assignment]

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Any) -> Tensor:
        raise NotImplementedError

    def _prepare(self, x: Tensor) -> Any:
        return None

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks:
        x = _vectors(_get(batch, key, self._name))
        state = self._prepare(x)
        n = x.shape[0]

        def block(a: int, b: int) -> Tensor:
            s = self._logits(x[a:b], x, a, state)
            if self.exclude_self:
                s = _mask_self(s, a)
            return log_normalise(s)

        return RowBlocks(n, n, self.exclude_self, block)

    supports_entries = True  # type: ignore[assignment]

    def logits(self, batch: Batch, key: str = "embeddings") -> Tensor:
        """The (N, N) logits s_ij, q = softmax over each row's allowed columns; self left unmasked."""
        x = _vectors(_get(batch, key, self._name))
        return self._logits(x, x, 0, self._prepare(x))

    def _pair_logits(self, x: Tensor, cols: Tensor, state: Any) -> Tensor:
        raise NotImplementedError

    def log_prob_at(self, batch: Batch, key: str, cols: Tensor) -> Tensor:
        x = _vectors(_get(batch, key, self._name))
        state = self._prepare(x)
        n = x.shape[0]
        step = _block_rows(n, n)

        def lse(a: int, b: int, x: Tensor, *_: Any) -> Tensor:
            s = self._logits(x[a:b], x, a, state)
            if self.exclude_self:
                s.diagonal(offset=a).fill_(NEG_INF)  # in place on a fresh block: no N x N mask
            return torch.logsumexp(s, 1)

        spans = [(a, min(a + step, n)) for a in range(0, n, step)]
        if len(spans) > 1 and torch.is_grad_enabled():
            parts = [checkpoint(lse, a, b, x, use_reentrant=False) for a, b in spans]
        else:
            parts = [lse(a, b, x) for a, b in spans]
        norm = torch.cat(parts) if parts else x.new_zeros(0)
        logits = self._pair_logits(x, cols.clamp(min=0), state)
        return torch.where(cols >= 0, logits - norm[:, None], NEG_INF)

    _name = ""


class Gaussian(_Pairwise):
    """Gaussian affinities exp(-d_ij / (2 sigma^2)), d squared Euclidean or 1 - cos; optional t-SNE perplexity."""

    discovery = {
        "p": {"tasks": ("2d",), "params": {"perplexity": {"uniform": [5.0, 50.0]}}},
        "q": {"tasks": ("2d", "representation"), "params": {"sigma": {"loguniform": [0.3, 3.0]}}},
    }

    _name = "gaussian"

    def __init__(
        self,
        sigma: float = 1.0,
        metric: str = "euclidean",
        perplexity: float | None = None,
        include_self: bool = False,
    ) -> None:
        super().__init__()
        self.sigma = _positive(sigma, "sigma", "gaussian")
        self.metric = _check_metric(metric, "gaussian")
        self.perplexity = None if perplexity is None else _positive(perplexity, "perplexity", "gaussian")
        if self.perplexity is not None and self.perplexity < 1:
            raise KernelError(f"kernel 'gaussian': perplexity must be at least 1, got {perplexity!r}")
        self.include_self = bool(include_self)

    def _prepare(self, x: Tensor) -> Tensor | None:
        if self.perplexity is None:
            return None
        return self.calibrate(x)

    @torch.no_grad()
    def calibrate(self, x: Tensor, iters: int = 64) -> Tensor:
        """Per-row precisions beta_i = 1 / (2 sigma_i^2) whose rows have the target perplexity (bisection)."""
        x = x.detach()
        n = x.shape[0]
        support = n - 1 if self.exclude_self else n
        assert self.perplexity is not None
        if self.perplexity > support:
            raise KernelError(
                f"kernel 'gaussian': perplexity {self.perplexity:g} needs rows of more than "
                f"{self.perplexity:g} points; this batch gives {support}"
            )
        target = math.log(self.perplexity)
        betas = torch.empty(n, dtype=x.dtype, device=x.device)
        for a in range(0, n, step := _block_rows(n, n)):
            d = _sq_dist(x[a : a + step], x, self.metric)
            if self.exclude_self:
                d = d.masked_fill(~_allowed(d.shape[0], n, a, True, d.device), float("inf"))
            finite = torch.where(torch.isfinite(d), d, torch.nan)
            scale = torch.nanmean(finite, 1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
            # Bisection on log(beta * mean distance): entropy falls monotonically as beta grows.
            lo = torch.full_like(scale, -30.0)
            hi = torch.full_like(scale, 30.0)
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                lp = torch.log_softmax(-(mid.exp() / scale) * d, 1)
                ent = -torch.where(lp > NEG_INF, lp.exp() * lp, 0.0).sum(1, keepdim=True)
                too_flat = ent > target
                lo = torch.where(too_flat, mid, lo)
                hi = torch.where(too_flat, hi, mid)
            betas[a : a + step] = (0.5 * (lo + hi)).exp().squeeze(1) / scale.squeeze(1)
        return betas

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Tensor | None) -> Tensor:
        d = _sq_dist(xa, x, self.metric)
        if state is None:
            return -d / (2.0 * self.sigma**2)
        return -state[a : a + xa.shape[0], None] * d

    def _pair_logits(self, x: Tensor, cols: Tensor, state: Tensor | None) -> Tensor:
        d = _pair_dist(x, cols, self.metric)
        return -d / (2.0 * self.sigma**2) if state is None else -state[:, None] * d


class StudentT(_Pairwise):
    """Student-t affinities (1 + d_ij / (scale * dof))^(-(dof + 1) / 2); dof = 1 is t-SNE's 1 / (1 + d)."""

    # Heavy tails: dof 1 is t-SNE's Cauchy kernel, large dof tends to the Gaussian.
    discovery = {"q": {"tasks": ("2d", "representation"), "params": {"dof": {"loguniform": [0.5, 20.0]}}}}

    _name = "student_t"

    def __init__(
        self, dof: float = 1.0, scale: float = 1.0, metric: str = "euclidean", include_self: bool = False
    ) -> None:
        super().__init__()
        self.dof = _positive(dof, "dof", "student_t")
        self.scale = _positive(scale, "scale", "student_t")
        self.metric = _check_metric(metric, "student_t")
        self.include_self = bool(include_self)

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Any) -> Tensor:
        d = _sq_dist(xa, x, self.metric)
        return -0.5 * (self.dof + 1.0) * torch.log1p(d / (self.scale * self.dof))

    def _pair_logits(self, x: Tensor, cols: Tensor, state: Any) -> Tensor:
        d = _pair_dist(x, cols, self.metric)
        return -0.5 * (self.dof + 1.0) * torch.log1p(d / (self.scale * self.dof))


class Cosine(_Pairwise):
    """InfoNCE softmax: proportional to exp(cos(z_i, z_j) / temperature)."""

    discovery = {"q": {"tasks": ("representation",), "params": {"temperature": {"loguniform": [0.05, 1.0]}}}}

    _name = "cosine"

    def __init__(self, temperature: float = 0.5, include_self: bool = False) -> None:
        super().__init__()
        self.temperature = _positive(temperature, "temperature", "cosine")
        self.include_self = bool(include_self)

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1)

    def _logits(self, xa: Tensor, x: Tensor, a: int, state: Tensor) -> Tensor:
        return state[a : a + xa.shape[0]] @ state.T / self.temperature

    def _pair_logits(self, x: Tensor, cols: Tensor, state: Tensor) -> Tensor:
        return (state[:, None, :] * state[cols]).sum(-1) / self.temperature
