"""The two-symbol lattice loss equals torchaudio's fused transducer loss, value and gradient."""

import pytest
import torch
import torchaudio

from asr_adapt.models.transducer.loss import lattice_rnnt_loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_fused_rnnt_loss(reduction):
    g = torch.Generator().manual_seed(0)
    b, t, u, v = 4, 9, 6, 11
    logits = torch.randn(b, t, u + 1, v, generator=g, requires_grad=True)
    targets = torch.randint(1, v, (b, u), generator=g)
    logit_lengths = torch.tensor([9, 7, 9, 4])
    target_lengths = torch.tensor([6, 3, 0, 4])
    targets[1, 3:] = 0  # padding past the length must not matter
    ref = torchaudio.functional.rnnt_loss(logits, targets.int(), logit_lengths.int(), target_lengths.int(),
                                          blank=0, reduction=reduction, fused_log_softmax=True)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    ours = lattice_rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction=reduction)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)


def test_bf16_logits_are_normalised_in_fp32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 4, 7, generator=g)
    targets = torch.randint(1, 7, (2, 3), generator=g)
    lengths, tlens = torch.tensor([5, 5]), torch.tensor([3, 2])
    loss16 = lattice_rnnt_loss(logits.bfloat16(), targets, lengths, tlens)
    assert loss16.dtype == torch.float32
    ref = lattice_rnnt_loss(logits.bfloat16().float(), targets, lengths, tlens)
    torch.testing.assert_close(loss16, ref)
