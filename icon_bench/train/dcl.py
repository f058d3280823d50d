"""Debiased contrastive learning (Chuang et al.): its dedicated loss and the recipe that uses it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from icon_bench.errors import TrialError
from icon_bench.hooks.registry import split_spec
from icon_bench.train.recipe import Method

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits


# -- the dedicated DCL loss ---------------------------------------------------------------------
class DebiasedContrastiveLoss(nn.Module):
    """Chuang et al. (2020) debiased contrastive loss over views sharing ``batch["index"]``.

    For anchor i with positive j: -log e^{s_ij} / (e^{s_ij} + M * Ng_i), with
    Ng_i = max((mean_neg e^{s_ik} - tau_plus * mean_pos e^{s_ij}) / (1 - tau_plus), e^{-1/t}),
    s = cos / t. It is not an (p, q, divergence) triple: the divergence of a dcl trial is fixed.
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= tau_plus < 1.0:
            raise TrialError(f"dcl tau_plus must be in [0, 1), got {tau_plus}")
        self.temperature = temperature
        self.tau_plus = tau_plus

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        z = nn.functional.normalize(batch["embeddings"].float(), dim=1)
        index = batch["index"]
        n = z.shape[0]
        sim = z @ z.T / self.temperature
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        pos = (index.unsqueeze(0) == index.unsqueeze(1)) & ~eye
        neg = ~(pos | eye)
        n_neg = neg.sum(1).clamp_min(1)
        has = pos.any(1) & neg.any(1)
        # Subtract the row max for stability; the floor e^{-1/t} shifts with it.
        shift = sim.masked_fill(eye, float("-inf")).amax(1, keepdim=True).detach()
        e = torch.exp(sim - shift)
        neg_mean = (e * neg).sum(1) / n_neg
        pos_mean = (e * pos).sum(1) / pos.sum(1).clamp_min(1)
        floor = torch.exp(-1.0 / self.temperature - shift.squeeze(1))
        ng = torch.maximum((neg_mean - self.tau_plus * pos_mean) / (1 - self.tau_plus), floor)
        log_denom = torch.log(e + (n_neg * ng).unsqueeze(1))
        log_ratio = (sim - shift) - log_denom
        per_row = -(log_ratio * pos).sum(1) / pos.sum(1).clamp_min(1)
        if z.device.type == "cpu":  # reading `has` waits for a device; there an empty batch gives NaN, which the trainer reports
            if not bool(has.any()):
                raise TrialError("dcl: no row has both a positive view and a negative; use settings.views >= 2")
            return per_row[has].mean()
        return torch.where(has, per_row, 0.0).sum() / has.sum()


@dataclasses.dataclass
class DCLMethod(Method):
    """Debiased contrastive learning: the recipe's p/q name the pairs; the loss is Chuang et al.'s."""

    def build_loss(self, data: DataSplits, dim: int | None = None) -> nn.Module:
        if split_spec(self.divergence)[0] != "kl":
            raise TrialError("dcl has its own loss (Chuang et al.); its divergence cannot be changed")
        params = split_spec(self.q)[1]
        return DebiasedContrastiveLoss(
            temperature=float(params.get("temperature", 0.5)), tau_plus=float(params.get("tau_plus", 0.1))
        )
