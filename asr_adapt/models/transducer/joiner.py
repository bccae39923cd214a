"""Joiner: ``out(act(enc_proj[pass](enc) + dec_proj(pred)))``, shared by both encoder passes.

Each encoder pass has its own input projection (their outputs live in different spaces);
the prediction-network projection and the output layer are shared, so one prediction
network and one vocabulary layer serve streaming and full-context decoding.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class Joiner(nn.Module):
    def __init__(self, enc_dim: int, pred_dim: int, joiner_dim: int, vocab_size: int, passes: list[str],
                 activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown joiner activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.enc_proj = nn.ModuleDict({p: nn.Linear(enc_dim, joiner_dim) for p in passes})
        self.dec_proj = nn.Linear(pred_dim, joiner_dim)
        self.out = nn.Linear(joiner_dim, vocab_size)
        self.activation = ACTIVATIONS[activation]

    def project_encoder(self, enc: torch.Tensor, pass_name: str) -> torch.Tensor:
        """(B, T, D) -> (B, T, J)."""
        return self.enc_proj[pass_name](enc)

    def project_decoder(self, pred: torch.Tensor) -> torch.Tensor:
        """(B, U, P) -> (B, U, J)."""
        return self.dec_proj(pred)

    def forward(self, enc_p: torch.Tensor, dec_p: torch.Tensor) -> torch.Tensor:
        """Broadcasting join of projected inputs, e.g. (B, T, 1, J) + (B, 1, U+1, J) -> (B, T, U+1, V)."""
        return self.out(self.activation(enc_p + dec_p))
