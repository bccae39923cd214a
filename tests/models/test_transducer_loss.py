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


# ---------------------------------------------------------------- pruned transducer loss
from asr_adapt.models.transducer.loss import (  # noqa: E402
    prune_ranges,
    pruned_lattice,
    pruned_loss_scales,
    pruned_window,
    simple_lattice,
    two_symbol_rnnt_loss,
)


def _lattice_case(seed=0, b=5, t=12, u=7, v=9):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, v, (b, u), generator=g)
    logit_lengths = torch.tensor([12, 9, 12, 5, 3])[:b]
    target_lengths = torch.tensor([7, 4, 0, 7, 2])[:b]
    return g, targets, logit_lengths, target_lengths


def test_simple_lattice_equals_the_explicit_additive_joiner():
    g, targets, _, _ = _lattice_case()
    am, lm = torch.randn(5, 12, 9, generator=g) * 3, torch.randn(5, 8, 9, generator=g) * 3
    blank_lp, label_lp = simple_lattice(am, lm, targets)
    logp = (am[:, :, None] + lm[:, None]).log_softmax(-1)  # (B, T, U+1, V), what it avoids building
    nxt = torch.nn.functional.pad(targets, (0, 1))
    torch.testing.assert_close(blank_lp, logp[..., 0])
    torch.testing.assert_close(label_lp, logp.gather(-1, nxt[:, None, :, None].expand(5, 12, 8, 1))[..., 0])


@pytest.mark.parametrize("s_range", [2, 3, 5])
def test_prune_ranges_leave_every_utterance_a_path(s_range):
    for seed in range(5):
        g, targets, tl, ul = _lattice_case(seed)
        blank_lp, label_lp = simple_lattice(torch.randn(5, 12, 9, generator=g) * 4,
                                            torch.randn(5, 8, 9, generator=g) * 4, targets)
        s = pruned_window(s_range, tl, ul, 8)
        assert s >= s_range or s == 8
        assert all(int(t_) * (s - 1) >= int(u_) for t_, u_ in zip(tl, ul))
        starts = prune_ranges(blank_lp, label_lp, tl, ul, s)
        for i in range(5):
            st = starts[i, : int(tl[i])]
            assert int(st[0]) == 0  # (0, 0) is in the first window
            assert int(st[-1]) + s - 1 >= int(ul[i])  # (T_b - 1, U_b) is in the last one
            assert int(st.max()) <= max(int(ul[i]) + 1 - s, 0)
            steps = st[1:] - st[:-1]
            assert bool((steps >= 0).all()) and bool((steps <= s - 1).all())
        # A window-restricted lattice keeps a subset of the alignments: its loss is finite and
        # never below the full lattice's.
        idx = starts[:, :, None] + torch.arange(s)
        full_logp = torch.randn(5, 12, 8, 9, generator=g).log_softmax(-1)
        logp = full_logp.gather(2, idx[..., None].expand(-1, -1, -1, 9))
        pruned = two_symbol_rnnt_loss(*pruned_lattice(logp, targets, starts, 8), tl, ul, reduction="none")
        full = lattice_rnnt_loss(full_logp, targets, tl, ul, reduction="none")
        assert bool(torch.isfinite(pruned).all())
        assert bool((pruned >= full - 1e-4).all())


def test_prune_ranges_follow_the_alignment():
    """A lattice whose alignment is forced (label u emitted at frame 2u) gets windows around it."""
    t, u = 16, 7
    blank_lp = torch.full((1, t, u + 1), -30.0)
    label_lp = torch.full((1, t, u + 1), -30.0)
    for k in range(u + 1):
        blank_lp[0, 2 * k:2 * k + 2, k] = 0.0  # stay at u = k for two frames
        if k < u:
            label_lp[0, 2 * k + 1, k] = 0.0  # then emit label k + 1
    starts = prune_ranges(blank_lp, label_lp, torch.tensor([t]), torch.tensor([u]), 3)
    for frame in range(t):
        k = min(frame // 2, u)
        assert int(starts[0, frame]) <= k < int(starts[0, frame]) + 3


def test_pruned_model_loss_equals_the_full_loss_when_the_window_spans_the_lattice():
    import dataclasses

    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer.config import PRESETS
    from asr_adapt.models.transducer.tokenizer import train_tokenizer

    tok = train_tokenizer("char", ["abcdefgh"])
    cfg = dataclasses.replace(PRESETS.get("tiny"), vocab_size=tok.vocab_size, ctc_weight=0.0)
    torch.manual_seed(0)
    full = TransducerBackbone(cfg, tok).eval()
    torch.manual_seed(1)
    pruned = TransducerBackbone(dataclasses.replace(cfg, prune_range=64, simple_loss_scale=0.0), tok).eval()
    missing, unexpected = pruned.load_state_dict(full.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("simple_am", "simple_lm")) for k in missing) and missing
    g = torch.Generator().manual_seed(0)
    enc = torch.randn(3, 10, cfg.d_model, generator=g)
    lengths, targets, tlens = torch.tensor([10, 7, 4]), torch.randint(1, tok.vocab_size, (3, 6), generator=g), \
        torch.tensor([6, 3, 1])
    ref = full.transducer_loss(enc, lengths, "first_pass", targets, tlens)
    got = pruned.transducer_loss(enc, lengths, "first_pass", targets, tlens, step=10**6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # A narrow window scores fewer alignments: a higher loss, and the simple heads get gradients.
    narrow = TransducerBackbone(dataclasses.replace(cfg, prune_range=2), tok)
    narrow.load_state_dict(pruned.state_dict())
    loss = narrow.transducer_loss(enc, lengths, "first_pass", targets, tlens, step=0)
    loss.backward()
    assert narrow.simple_lm.weight.grad.abs().sum() > 0 and narrow.joiner.out.weight.grad.abs().sum() > 0


def test_pruned_loss_scales_ramp():
    assert pruned_loss_scales(0.5, 0, 0) == (0.5, 1.0)  # no warm-up
    assert pruned_loss_scales(0.5, 2000, 0) == (1.0, 0.1)
    assert pruned_loss_scales(0.5, 2000, 1000) == pytest.approx((0.75, 0.55))
    assert pruned_loss_scales(0.5, 2000, 2000) == (0.5, 1.0)
    assert pruned_loss_scales(0.5, 2000, None) == (0.5, 1.0)


def test_blank_posteriors_sum_to_one_per_frame():
    """The window criterion rests on it: every frame is left by exactly one blank arc."""
    g, targets, tl, ul = _lattice_case(3)
    blank_lp, label_lp = simple_lattice(torch.randn(5, 12, 9, generator=g), torch.randn(5, 8, 9, generator=g), targets)
    bl, ll = blank_lp.clone().requires_grad_(), label_lp.clone().requires_grad_()
    g_blank, _ = torch.autograd.grad(two_symbol_rnnt_loss(bl, ll, tl, ul, reduction="sum"), [bl, ll])
    for i in range(5):
        torch.testing.assert_close(g_blank[i, : int(tl[i])].abs().sum(-1), torch.ones(int(tl[i])))


def test_simple_lattice_is_fp32_under_autocast_and_smoothing_mixes_the_sides():
    g, targets, _, _ = _lattice_case(4)
    am, lm = torch.randn(5, 12, 9, generator=g) * 3, torch.randn(5, 8, 9, generator=g) * 3
    ref = simple_lattice(am, lm, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = simple_lattice(am.bfloat16(), lm.bfloat16(), targets)
    for x, y in zip(got, simple_lattice(am.bfloat16().float(), lm.bfloat16().float(), targets)):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    smooth = simple_lattice(am, lm, targets, lm_scale=0.25)
    lm_lp = lm.log_softmax(-1)
    torch.testing.assert_close(smooth[0], 0.75 * ref[0] + 0.25 * lm_lp[..., 0][:, None, :])


def test_pruned_lattice_equals_the_masked_full_lattice():
    g, targets, tl, ul = _lattice_case(5)
    full_logp = torch.randn(5, 12, 8, 9, generator=g).log_softmax(-1)
    blank_lp, label_lp = simple_lattice(torch.randn(5, 12, 9, generator=g), torch.randn(5, 8, 9, generator=g), targets)
    s = pruned_window(3, tl, ul, 8)
    starts = prune_ranges(blank_lp, label_lp, tl, ul, s)
    idx = starts[:, :, None] + torch.arange(s)
    got = pruned_lattice(full_logp.gather(2, idx[..., None].expand(-1, -1, -1, 9)), targets, starts, 8)
    inside = torch.zeros(5, 12, 8, dtype=torch.bool).scatter(2, idx, True)
    nxt = torch.nn.functional.pad(targets, (0, 1))
    label = full_logp.gather(-1, nxt[:, None, :, None].expand(5, 12, 8, 1))[..., 0]
    for x, y in zip(got, (full_logp[..., 0], label)):
        torch.testing.assert_close(x, torch.where(inside, y, torch.full_like(y, -1.0e4)))


def _tiny_pruned(prune_range, **kw):
    import dataclasses

    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer.config import PRESETS
    from asr_adapt.models.transducer.tokenizer import train_tokenizer

    tok = train_tokenizer("char", ["abcdefgh"])
    cfg = dataclasses.replace(PRESETS.get("tiny"), vocab_size=tok.vocab_size, prune_range=prune_range, **kw)
    torch.manual_seed(0)
    return TransducerBackbone(cfg, tok)


def test_pruned_loss_is_batch_invariant_and_runs_under_inference_mode():
    model = _tiny_pruned(3).eval()
    g = torch.Generator().manual_seed(2)
    enc = torch.randn(4, 9, 32, generator=g)
    lengths, tlens = torch.tensor([9, 6, 9, 4]), torch.tensor([7, 1, 0, 5])
    targets = torch.randint(1, model.config.vocab_size, (4, 7), generator=g)
    with torch.inference_mode():  # how Lightning validates
        batch = model.transducer_loss(enc, lengths, "second_pass", targets, tlens, step=500)
        alone = [model.transducer_loss(enc[i:i + 1, : int(lengths[i])], lengths[i:i + 1], "second_pass",
                                       targets[i:i + 1, : int(tlens[i])], tlens[i:i + 1], step=500)
                 for i in range(4)]
    torch.testing.assert_close(batch, torch.stack(alone).mean(), rtol=1e-5, atol=1e-5)


def test_pruned_window_widens_for_dense_labels():
    model = _tiny_pruned(2)
    g = torch.Generator().manual_seed(3)
    enc = torch.randn(2, 3, 32, generator=g, requires_grad=True)
    targets = torch.randint(1, model.config.vocab_size, (2, 6), generator=g)
    lengths, tlens = torch.tensor([3, 3]), torch.tensor([6, 2])  # 6 labels in 3 frames: S >= 3
    assert pruned_window(2, lengths, tlens, 7) == 3
    loss = model.transducer_loss(enc, lengths, "first_pass", targets, tlens, step=0)
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(enc.grad).all()) and enc.grad.abs().sum() > 0
