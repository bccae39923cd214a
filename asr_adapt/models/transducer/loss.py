"""The transducer loss over the full (T, U+1) lattice, with the vocabulary normalised in torch.

torchaudio's ``rnnt_loss`` with ``fused_log_softmax=True`` normalises every lattice cell over the
vocabulary inside its own CPU kernel, one cell at a time: on this project's CPU pretraining it
was a fifth of a bf16 training step (``egs/synth_tail/asr2/RESULTS.md`` section 3f). The lattice
recursion only ever reads two log-probabilities per cell: blank, and the next label. So the
vocabulary is normalised here by one vectorised ``log_softmax`` (autograd gives its backward),
the two columns are gathered, and torchaudio's ``rnnt_loss`` runs its forward-backward on a
two-symbol lattice (``fused_log_softmax=False``: inputs are log-probs; targets are all symbol 1).
Loss and gradients equal the fused call's to float rounding (``tests/models/test_transducer_loss.py``).
"""

from __future__ import annotations

import torch
import torchaudio


def lattice_rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                      target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """Transducer loss of joiner logits, as ``torchaudio.functional.rnnt_loss(..., fused_log_softmax=True)``.

    logits: (B, T, U+1, V) joiner outputs, any float dtype (normalised in fp32);
    targets: (B, U) label ids (padding anything in [0, V)); logit_lengths, target_lengths: (B,).
    Returns the loss reduced as ``reduction`` ("mean", "sum" or "none": (B,)).
    """
    b, t, u1, _ = logits.shape
    logp = logits.float().log_softmax(-1)
    nxt = torch.nn.functional.pad(targets.long(), (0, 1), value=blank)  # (B, U+1): label after cell u
    label = logp.gather(-1, nxt[:, None, :, None].expand(b, t, u1, 1))  # (B, T, U+1, 1)
    two = torch.cat([logp[..., blank:blank + 1], label], dim=-1)  # (B, T, U+1, 2): blank, next label
    ones = torch.ones(b, u1 - 1, dtype=torch.int32, device=logits.device)
    return torchaudio.functional.rnnt_loss(two, ones, logit_lengths.int(), target_lengths.int(), blank=0,
                                           reduction=reduction, fused_log_softmax=False)
