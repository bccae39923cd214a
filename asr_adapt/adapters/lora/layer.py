"""Per-locale LoRA on an ``nn.Linear``: ``y' = y + (alpha/r) * B A dropout(x)`` per routed row.

B starts at zero (identity at attach time); A is Kaiming-uniform like ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from asr_adapt.adapters.lora.config import LoRAConfig
from asr_adapt.adapters.registry import AttachContext
from asr_adapt.adapters.routed import BankMixin, add_routed


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

    def _delta_out(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D_in) -> (..., D_out)."""
        pair = self[key]
        x = F.dropout(x, self.cfg.dropout, self.training)
        return (x @ pair.A.t() @ pair.B.t()) * self.cfg.scale

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        steps = self.steps(output.shape[self.batch_dim])
        if not steps:
            return None
        return add_routed(output, inputs[0], self.batch_dim, steps, self._delta_out)

    def delta(self, locale: str) -> torch.Tensor:
        """(D_out, D_in) weight update of ``locale``."""
        pair = self[locale]
        return lora_delta(pair.A, pair.B, self.cfg.scale)


def make_bank(name: str, linear: nn.Linear, cfg: LoRAConfig, ctx: AttachContext) -> LoRABank:
    return LoRABank(linear, cfg)
