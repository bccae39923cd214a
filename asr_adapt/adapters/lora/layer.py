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
from asr_adapt.adapters.routed import BankMixin, WeightCache, add_low_rank, row_slots


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
        self._weights = WeightCache()

    def add_locale(self, locale: str) -> None:
        self[locale] = LoRAPair(self.d_in, self.d_out, self.cfg.rank)

    def _stacked(self, active: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The active locales' pairs side by side: down (n r, D_in), up (D_out, n r)."""
        pairs = [self[k] for k in active]

        def build():
            if len(pairs) == 1:
                return pairs[0].A, pairs[0].B
            return torch.cat([p.A for p in pairs]), torch.cat([p.B for p in pairs], dim=1)

        return self._weights.get(active, [t for p in pairs for t in (p.A, p.B)], build)

    def _row_gate(self, batch: int, active: tuple[str, ...], slots: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """(B, n r): ``scale`` on the ranks of each row's own locale, 0 elsewhere (and on rows
        without an adapter). It depends only on the routing, the rank and the scale, so every
        LoRA layer of one forward pass shares one copy."""
        r, scale = self.cfg.rank, self.cfg.scale

        def make(_groups) -> torch.Tensor:
            gate = torch.zeros(batch, len(active) * r, dtype=ref.dtype)
            for b, slot in enumerate(slots.tolist()):
                if slot < len(active):
                    gate[b, slot * r:(slot + 1) * r] = scale
            return gate.to(ref.device)

        # The bank's locale set fixes the slots (row_slots' key), so it keys the gate too.
        return routing.per_pass(batch, ("lora-gate", self.locale_keys(), r, scale, ref.dtype, ref.device), make)

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
        return add_low_rank(output, x, self.batch_dim, self._row_gate(batch, active, slots, down), down, up)

    def delta(self, locale: str) -> torch.Tensor:
        """(D_out, D_in) weight update of ``locale``."""
        pair = self[locale]
        return lora_delta(pair.A, pair.B, self.cfg.scale)


def make_bank(name: str, linear: nn.Linear, cfg: LoRAConfig, ctx: AttachContext) -> LoRABank:
    return LoRABank(linear, cfg)
