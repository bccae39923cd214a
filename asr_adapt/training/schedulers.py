"""Learning-rate schedules selectable from YAML (``lr_scheduler: {class_path: ...}``)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine(LambdaLR):
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``.

    ``total_steps`` is an attribute read at every step (saved with the scheduler's state), so a
    wall-clock budget (:class:`~asr_adapt.training.pacing.TimeBudget`) can re-plan it.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 50, total_steps: int = 1000, min_ratio: float = 0.1):
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError("total_steps must be > 0 and warmup_steps >= 0")
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / max(1, self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupConstant(LambdaLR):
    """Linear warm-up for ``warmup_steps``, then constant."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 50):
        super().__init__(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
