"""Configuration of sparsely shared LoRA (S2-LoRA, arXiv 2309.11756)."""

from __future__ import annotations

from dataclasses import dataclass, field

from asr_adapt.adapters.targets import TargetConfig


@dataclass(frozen=True)
class S2LoRAConfig(TargetConfig):
    rank: int = field(default=8, metadata={"help": "rank r of the shared pair (A: r x D_in, B: D_out x r)"})
    scale: float = field(default=1.0, metadata={"help": "delta W_i = scale * B diag(lambda_i) A"})
    l1_beta: float = field(
        default=1e-3, metadata={"help": "beta of the L1 penalty beta * sum_i |lambda_i| that makes lambda sparse"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input x"})
    train_shared: bool = field(
        default=True,
        metadata={"help": "train the shared A, B (False: only the per-locale lambdas train, e.g. when adding "
                  "a locale to a set whose shared pair is already trained)"},
    )
    init_seed: int = field(
        default=0, metadata={"help": "seed of the random shared A, B (identical pairs for the same config)"}
    )

    def __post_init__(self) -> None:
        self._check_targets()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.l1_beta < 0:
            raise ValueError(f"l1_beta must be >= 0, got {self.l1_beta}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
