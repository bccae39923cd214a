"""S2-LoRA: one shared low-rank pair per weight shape, a sparse rank vector per matrix.

For adapted matrix i (shape group g = (D_out, D_in)) and locale l:

    delta W_i,l = scale * B_g diag(lambda_i,l) A_g        A_g: (r, D_in), B_g: (D_out, r)

A_g and B_g live once on the root model (``model.s2lora_shared[f"{D_out}x{D_in}"]``);
each matrix keeps only ``lambda_i,l`` (r numbers) per locale. lambda starts at 0 (identity)
while A, B are random, so lambda receives gradient from the first step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from asr_adapt.adapters.registry import AttachContext
from asr_adapt.adapters.routed import BankMixin, add_low_rank, row_slots
from asr_adapt.adapters.s2lora.config import S2LoRAConfig

SHARED_ATTR = "s2lora_shared"


def s2lora_delta(A: torch.Tensor, B: torch.Tensor, lam: torch.Tensor, scale: float) -> torch.Tensor:
    """A: (r, D_in), B: (D_out, r), lam: (r,) -> (D_out, D_in) = scale * B diag(lam) A."""
    return scale * ((B.float() * lam.float()) @ A.float())


class SharedPair(nn.Module):
    """The shared (A, B) of one shape group."""

    def __init__(self, d_in: int, d_out: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        # Same bound as nn.Linear's default init (kaiming_uniform with a=sqrt(5)): 1/sqrt(fan_in).
        self.A = nn.Parameter((torch.rand(rank, d_in, generator=generator) * 2 - 1) / math.sqrt(d_in))
        self.B = nn.Parameter((torch.rand(d_out, rank, generator=generator) * 2 - 1) / math.sqrt(rank))


def shape_key(d_out: int, d_in: int) -> str:
    return f"{d_out}x{d_in}"


class S2LoRALambdas(BankMixin, nn.ParameterDict):
    """``{locale: lambda (r,)}`` on one linear layer; :meth:`hook` is its forward hook."""

    def __init__(self, pair: SharedPair, cfg: S2LoRAConfig) -> None:
        nn.ParameterDict.__init__(self)
        self.cfg = cfg
        # A plain (unregistered) reference: the pair is registered once, on the root model;
        # registering it here too would duplicate it in every state_dict.
        object.__setattr__(self, "pair", pair)

    def add_locale(self, locale: str) -> None:
        self[locale] = nn.Parameter(torch.zeros(self.cfg.rank, device=self.pair.A.device, dtype=self.pair.A.dtype))

    def _gate(self, active: tuple[str, ...]) -> torch.Tensor:
        """(n + 1, r): row i is lambda of active locale i, the last row 0 (rows without an adapter).

        Each row selects its own row (no product with another locale's numbers), so rows
        stay independent of each other."""
        lams = [self[k] for k in active]
        return torch.cat([torch.stack(lams), lams[0].new_zeros(1, self.cfg.rank)])

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        routed = row_slots(output.shape[self.batch_dim], self.locale_keys())
        if routed is None:
            return None
        active, slots = routed
        x = inputs[0]
        if self.training and self.cfg.dropout > 0:
            x = F.dropout(x, self.cfg.dropout)
        row_gate = self._gate(active).index_select(0, slots.to(self.pair.A.device))
        return add_low_rank(output, x, self.batch_dim, self.pair.A, self.pair.B, row_gate=row_gate,
                            scale=self.cfg.scale)

    def delta(self, locale: str) -> torch.Tensor:
        """(D_out, D_in) weight update of ``locale``."""
        return s2lora_delta(self.pair.A, self.pair.B, self[locale], self.cfg.scale)


def make_bank(name: str, linear: nn.Linear, cfg: S2LoRAConfig, ctx: AttachContext) -> S2LoRALambdas:
    model = ctx.model
    if not hasattr(model, SHARED_ATTR):
        model.add_module(SHARED_ATTR, nn.ModuleDict())
    shared: nn.ModuleDict = getattr(model, SHARED_ATTR)
    key = shape_key(linear.out_features, linear.in_features)
    if key not in shared:
        # Seeded per shape, so a set re-attached with the same config starts from the same pair.
        g = torch.Generator().manual_seed(cfg.init_seed * 1_000_003 + linear.out_features * 7919 + linear.in_features)
        shared[key] = SharedPair(linear.in_features, linear.out_features, cfg.rank, g).to(
            device=linear.weight.device, dtype=linear.weight.dtype
        )
    return S2LoRALambdas(shared[key], cfg)


def l1_penalty(bank: S2LoRALambdas, cfg: S2LoRAConfig, locales: list[str]) -> torch.Tensor:
    """beta * sum_l |lambda_l|_1 over the given locales of one matrix."""
    if not locales:
        return torch.zeros((), device=bank.pair.A.device)
    return cfg.l1_beta * sum(bank[loc].abs().sum() for loc in locales)
