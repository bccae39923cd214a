"""Per-locale LoRA on an ``nn.Linear``: ``y' = y + (alpha/r) * B A dropout(x)`` per routed row.

B starts at zero (identity at attach time); A is Kaiming-uniform like ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from asr_adapt import routing
from asr_adapt.adapters.lora.config import LoRAConfig
from asr_adapt.adapters.registry import AttachContext
from asr_adapt.adapters.routed import BankMixin, add_low_rank, row_slots


def lora_delta(A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """Weight update of one LoRA pair. A: (r, D_in), B: (D_out, r) -> (D_out, D_in)."""
    return scale * (B.float() @ A.float())


class LoRAPair(nn.Module):
    """One locale's low-rank pair on one linear layer."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))


class LoRABank(BankMixin, nn.ModuleDict):
    """``{locale: LoRAPair}`` on one linear layer; :meth:`hook` is its forward hook."""

    def __init__(self, linear: nn.Linear, cfg: LoRAConfig) -> None:
        nn.ModuleDict.__init__(self)  # every child of the bank is a locale: keep other state plain
        self.d_in, self.d_out = linear.in_features, linear.out_features
        self.cfg = cfg

    def add_locale(self, locale: str) -> None:
        self[locale] = LoRAPair(self.d_in, self.d_out, self.cfg.rank)

    def _stacked(self, active: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The active locales' pairs side by side: down (n r, D_in), up (D_out, n r).

        Built on every call (two concatenations, microseconds): a copy kept between calls
        would have to notice every way a parameter can change in place.
        """
        pairs = [self[k] for k in active]
        if len(pairs) == 1:
            return pairs[0].A, pairs[0].B
        return torch.cat([p.A for p in pairs]), torch.cat([p.B for p in pairs], dim=1)

    def _row_mask(self, batch: int, active: tuple[str, ...], slots: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
        """(B, n r) bool: True on the ranks that are not the row's own locale's (all of them
        for rows without an adapter). It depends only on the routing and the rank, so every
        LoRA layer of one forward pass shares one copy."""
        r = self.cfg.rank

        def make(_groups) -> torch.Tensor:
            other = torch.ones(batch, len(active) * r, dtype=torch.bool)
            for b, slot in enumerate(slots.tolist()):
                if slot < len(active):
                    other[b, slot * r:(slot + 1) * r] = False
            return other.to(device)

        # The bank's locale set fixes the slots (row_slots' key), so it keys the mask too.
        return routing.per_pass(batch, ("lora-mask", self.locale_keys(), r, device), make)

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        batch = output.shape[self.batch_dim]
        routed = row_slots(batch, self.locale_keys())
        if routed is None:
            return None
        active, slots = routed
        down, up = self._stacked(active)
        x = inputs[0]
        if self.training and self.cfg.dropout > 0:
            x = F.dropout(x, self.cfg.dropout)
        mask = self._row_mask(batch, active, slots, down.device)
        return add_low_rank(output, x, self.batch_dim, down, up, row_mask=mask, scale=self.cfg.scale)

    def delta(self, locale: str) -> torch.Tensor:
        """(D_out, D_in) weight update of ``locale``."""
        pair = self[locale]
        return lora_delta(pair.A, pair.B, self.cfg.scale)


def make_bank(name: str, linear: nn.Linear, cfg: LoRAConfig, ctx: AttachContext) -> LoRABank:
    return LoRABank(linear, cfg)
