"""Configuration of per-locale LoRA on linear layers."""

from __future__ import annotations

from dataclasses import dataclass, field

from asr_adapt.adapters.targets import TargetConfig


@dataclass(frozen=True)
class LoRAConfig(TargetConfig):
    rank: int = field(default=8, metadata={"help": "rank r of the update B A (A: r x D_in, B: D_out x r)"})
    alpha: float = field(default=16.0, metadata={"help": "scale numerator: delta = (alpha / rank) * B A x"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input x"})

    def __post_init__(self) -> None:
        self._check_targets()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank
