"""Configuration of language-dependent adapters (LDA, arXiv 2401.08992)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from asr_adapt.adapters.targets import TargetConfig

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


@dataclass(frozen=True)
class LDAConfig(TargetConfig):
    bottleneck: int | None = field(
        default=None,
        metadata={"help": "bottleneck width D_b; None = sized so one locale costs target_fraction of the base"},
    )
    target_fraction: float = field(
        default=0.004,
        metadata={"help": "per-locale parameter budget as a fraction of the base model (paper: 0.4 %)"},
    )
    activation: str = field(default="relu", metadata={"help": f"bottleneck non-linearity, one of {ACTIVATIONS}"})
    layer_norm: bool = field(default=True, metadata={"help": "LayerNorm on the block output before the down-projection"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the bottleneck activations"})
    dim: int | None = field(
        default=None,
        metadata={"help": "block output width D; None = read from the block's last LayerNorm / Linear"},
    )
    bottleneck_scale: dict[str, float] | None = field(
        default=None,
        metadata={"help": "{regex over block names: factor}: a matching block's bottleneck is factor x D_b "
                  "(first match wins, others 1.0); the automatic D_b keeps the total at target_fraction, "
                  "so e.g. {decoder: 3.0} moves budget from the encoder to the decoder"},
    )

    def __post_init__(self) -> None:
        self._check_targets()
        if self.bottleneck is not None and self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1 or None (auto), got {self.bottleneck}")
        if not 0.0 < self.target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be >= 1 or None, got {self.dim}")
        for pattern, factor in (self.bottleneck_scale or {}).items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"invalid bottleneck_scale pattern {pattern!r}: {e}") from None
            if not float(factor) > 0.0:
                raise ValueError(f"bottleneck_scale factors must be > 0, got {factor} for {pattern!r}")

    def scale_for(self, name: str) -> float:
        """Bottleneck factor of the block named ``name`` (1.0 when no pattern matches)."""
        return next((float(f) for p, f in (self.bottleneck_scale or {}).items() if re.search(p, name)), 1.0)

    def width_for(self, name: str) -> int:
        """Bottleneck width of the block named ``name``; needs the resolved ``bottleneck``."""
        if self.bottleneck is None:
            raise ValueError("the LDA bottleneck is not resolved yet (prepare() sets it)")
        return max(1, round(self.scale_for(name) * self.bottleneck))
