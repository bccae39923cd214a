"""Stateless prediction network (icefall style): embedding + 1-D conv over the last tokens.

A bigram-ish context (``context_size`` tokens) replaces the LSTM: the decoder state of a
hypothesis is just its last few tokens, so beam search merges hypotheses by their token
tails and needs no recurrent state to carry, split or reorder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StatelessPredictor(nn.Module):
    """Token history -> prediction-network output (B, U, P).

    Blank (id 0) is both the start symbol and the embedding padding index, so its
    embedding is zero and left-padding the embedded sequence with zeros equals padding it
    with blanks: training (``need_pad=True``) and decoding (explicit blank context) agree.
    """

    def __init__(self, vocab_size: int, dim: int, context_size: int, blank_id: int = 0) -> None:
        super().__init__()
        self.context_size, self.blank_id = context_size, blank_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=blank_id)
        # groups=dim//4 as in icefall: cheap, and enough to mix the few context tokens.
        groups = max(1, dim // 4) if dim % 4 == 0 else 1
        self.conv = (
            nn.Conv1d(dim, dim, context_size, groups=groups, bias=False) if context_size > 1 else None
        )

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """y: (B, U) token ids.

        need_pad=True (training): output u depends on ``y[:, u-c+1 .. u]``; (B, U, P).
        need_pad=False (decoding): ``y`` holds exactly ``context_size`` tokens per row; (B, 1, P).
        """
        e = self.embedding(y)  # (B, U, P)
        if self.conv is not None:
            e = e.transpose(1, 2)
            if need_pad:
                e = F.pad(e, (self.context_size - 1, 0))
            e = self.conv(e).transpose(1, 2)
        return F.relu(e)

    def start_context(self, batch: int, device=None) -> torch.Tensor:
        """(B, context_size) blank tokens: the history of an empty hypothesis."""
        return torch.full((batch, self.context_size), self.blank_id, dtype=torch.long, device=device)
