"""A callback the numerical-fault tests put into a training config: it records, per step,
the gradient norm before clipping and the norm of the parameter update that followed."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class UpdateProbe(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.rows: list[dict] = []
        self._before: list[torch.Tensor] = []
        self._grad = 0.0

    def _params(self, pl_module):
        return [p for p in pl_module.parameters() if p.requires_grad]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = [p.detach().clone() for p in self._params(pl_module)]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # before clipping
        grads = [p.grad.norm() for p in self._params(pl_module) if p.grad is not None]
        self._grad = float(torch.stack(grads).norm()) if grads else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        deltas = [(p.detach() - b).norm() for p, b in zip(self._params(pl_module), self._before)]
        self.rows.append({"grad_norm": self._grad, "update_norm": float(torch.stack(deltas).norm())})
        self.out.write_text(json.dumps(self.rows))
