"""LDA layers: a residual bottleneck after a block, one per locale, routed per row.

    y' = y + up(act(down(LayerNorm(y))))        y: (B, T, D), down: D -> D_b, up: D_b -> D

``up`` starts at zero, so a new locale is exactly the identity.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from asr_adapt.adapters.lda.config import LDAConfig
from asr_adapt.adapters.registry import AttachContext
from asr_adapt.adapters.routed import BankMixin, add_routed

log = logging.getLogger(__name__)

_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    """One locale's adapter for one block: ``(..., D) -> (..., D)`` residual delta."""

    def __init__(self, dim: int, bottleneck: int, cfg: LDAConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if cfg.layer_norm else nn.Identity()
        self.down = nn.Linear(dim, bottleneck)
        self.act = _ACT[cfg.activation]()
        self.drop = nn.Dropout(cfg.dropout)
        self.up = nn.Linear(bottleneck, dim)
        # Zero up-projection: the adapter's delta is 0, so attaching it changes nothing.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (..., D) -> delta (..., D)."""
        return self.up(self.drop(self.act(self.down(self.norm(y)))))


class LDABank(BankMixin, nn.ModuleDict):
    """``{locale: Bottleneck}`` on one block; its :meth:`hook` is the block's forward hook."""

    def __init__(self, dim: int, bottleneck: int, cfg: LDAConfig) -> None:
        nn.ModuleDict.__init__(self)
        self.dim = dim
        self.bottleneck = bottleneck
        self.cfg = cfg

    def add_locale(self, locale: str) -> None:
        self[locale] = Bottleneck(self.dim, self.bottleneck, self.cfg)

    def hook(self, module: nn.Module, inputs: tuple, output):
        y = output[0] if isinstance(output, tuple) else output
        steps = self.steps(y.shape[self.batch_dim])
        if not steps:
            return None  # routing inactive or no row has an adapter: the block's own output
        if y.shape[-1] != self.dim:
            raise RuntimeError(f"LDA adapter built for width {self.dim} got block output {tuple(y.shape)}")
        new = add_routed(y, y, self.batch_dim, steps, lambda key, ys: self[key](ys))
        return (new, *output[1:]) if isinstance(output, tuple) else new


def block_width(block: nn.Module) -> int:
    """D of a block's output: its last LayerNorm's width, else its last Linear's out_features,
    else its last Conv1d's channels or Embedding's width."""
    norms = [m for m in block.modules() if isinstance(m, nn.LayerNorm)]
    if norms:
        return int(norms[-1].normalized_shape[-1])
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[-1].out_features)
    # e.g. a stateless prediction network: embedding (+ 1-D convolution over the history)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv1d)]
    if convs:
        return int(convs[-1].out_channels)
    embeddings = [m for m in block.modules() if isinstance(m, nn.Embedding)]
    if embeddings:
        return int(embeddings[-1].embedding_dim)
    raise ValueError(f"cannot infer the output width of {type(block).__name__}; set the LDA option dim")


def per_locale_params(dims: list[int], bottlenecks: list[int] | int, layer_norm: bool) -> int:
    """Parameters of one locale: per block ``D*D_b + D_b`` (down) + ``D_b*D + D`` (up) + ``2D`` (LN).

    bottlenecks: one width per block, or one width for all.
    """
    widths = [bottlenecks] * len(dims) if isinstance(bottlenecks, int) else bottlenecks
    return sum(2 * d * b + b + d + (2 * d if layer_norm else 0) for d, b in zip(dims, widths, strict=True))


def prepare(targets: list[tuple[str, nn.Module]], cfg: LDAConfig, ctx: AttachContext) -> LDAConfig:
    """Resolve ``dim`` and the automatic bottleneck so a locale costs ``target_fraction`` of the base.

    With ``bottleneck_scale`` block i gets ``round(s_i * D_b)``; D_b solves
    ``fixed + D_b * sum_i s_i (2 D_i + 1) = budget``, so moving width between groups keeps the cost.
    """
    dims = [cfg.dim or block_width(m) for _, m in targets]
    scales = [cfg.scale_for(name) for name, _ in targets]
    if len(set(dims)) != 1 and cfg.dim is None:
        log.info("LDA blocks have different widths %s", sorted(set(dims)))
    bottleneck = cfg.bottleneck
    if bottleneck is None:
        budget = cfg.target_fraction * ctx.base_params
        fixed = sum(d + (2 * d if cfg.layer_norm else 0) for d in dims)
        per_unit = sum(s * (2 * d + 1) for d, s in zip(dims, scales, strict=True))
        bottleneck = max(1, round((budget - fixed) / per_unit))
    cfg = dataclasses.replace(cfg, bottleneck=bottleneck, dim=dims[0] if len(set(dims)) == 1 else cfg.dim)
    widths = [cfg.width_for(name) for name, _ in targets]
    n = per_locale_params(dims, widths, cfg.layer_norm)
    log.info(
        "LDA bottleneck %s over %d blocks (D=%s): %d parameters per locale = %.3f %% of the %d-parameter base",
        bottleneck if len(set(widths)) == 1 else f"{min(widths)}-{max(widths)}", len(dims), dims[0], n,
        100.0 * n / max(1, ctx.base_params), ctx.base_params,
    )
    return cfg


def make_bank(name: str, block: nn.Module, cfg: LDAConfig, ctx: AttachContext) -> LDABank:
    return LDABank(cfg.dim or block_width(block), cfg.width_for(name), cfg)
