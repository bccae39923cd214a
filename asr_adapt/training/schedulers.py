"""Learning-rate schedules selectable from YAML (``lr_scheduler: {class_path: ...}``)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine(LambdaLR):
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 50, total_steps: int = 1000, min_ratio: float = 0.1):
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError("total_steps must be > 0 and warmup_steps >= 0")

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / max(1, warmup_steps)
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)


class WarmupConstant(LambdaLR):
    """Linear warm-up for ``warmup_steps``, then constant."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 50):
        super().__init__(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
