"""The transducer loss over the full (T, U+1) lattice, with the vocabulary normalised in torch.

torchaudio's ``rnnt_loss`` with ``fused_log_softmax=True`` normalises every lattice cell over the
vocabulary inside its own CPU kernel, one cell at a time: on this project's CPU pretraining it
was a fifth of a bf16 training step (``egs/synth_tail/asr2/RESULTS.md`` section 3f). The lattice
recursion only ever reads two log-probabilities per cell: blank, and the next label. So the
vocabulary is normalised here by one vectorised ``log_softmax`` (autograd gives its backward),
the two columns are gathered, and torchaudio's ``rnnt_loss`` runs its forward-backward on a
two-symbol lattice (``fused_log_softmax=False``: inputs are log-probs; targets are all symbol 1).
Loss and gradients equal the fused call's to float rounding (``tests/models/test_transducer_loss.py``).

The pruned transducer loss (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR
training", Interspeech 2022; k2/icefall's ``rnnt_loss_simple`` + ``rnnt_loss_pruned``) goes
further: the joiner itself, a (B, T, U+1, J) tanh and a J x V product per cell, is the cost.
A *simple* joiner (logits ``am[t] + lm[u]``, normalised by one (T, V) x (V, U+1) product, so the
4-D lattice is never built) gives a cheap loss whose gradient is each lattice node's
occupation probability; per frame the ``S`` label positions that hold most of it become the
only cells the real joiner evaluates. Both losses use the same two-symbol recursion below.
"""

from __future__ import annotations

import torch
import torchaudio

# Log-prob of the cells outside the pruned window: finite, so the recursion's log-add never meets
# (-inf) - (-inf), and low enough that no path through them weighs anything.
_OUTSIDE = -1.0e4


def two_symbol_rnnt_loss(blank_lp: torch.Tensor, label_lp: torch.Tensor, logit_lengths: torch.Tensor,
                         target_lengths: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The transducer recursion on normalised log-probs of the lattice's two arcs per cell.

    blank_lp, label_lp: (B, T, U+1) log P(blank | t, u) and log P(next label | t, u) (the label
    column at u = U is never read); lengths (B,). Returns the loss reduced as ``reduction``.
    """
    b, _, u1 = blank_lp.shape
    two = torch.stack([blank_lp.float(), label_lp.float()], dim=-1)  # (B, T, U+1, 2)
    ones = torch.ones(b, u1 - 1, dtype=torch.int32, device=blank_lp.device)
    return torchaudio.functional.rnnt_loss(two, ones, logit_lengths.int(), target_lengths.int(), blank=0,
                                           reduction=reduction, fused_log_softmax=False)


def _next_labels(targets: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, U) -> (B, U+1): the label emitted from cell u (padding with blank at u = U)."""
    return torch.nn.functional.pad(targets.long(), (0, 1), value=blank)


def lattice_rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                      target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """Transducer loss of joiner logits, as ``torchaudio.functional.rnnt_loss(..., fused_log_softmax=True)``.

    logits: (B, T, U+1, V) joiner outputs, any float dtype (normalised in fp32);
    targets: (B, U) label ids (padding anything in [0, V)); logit_lengths, target_lengths: (B,).
    Returns the loss reduced as ``reduction`` ("mean", "sum" or "none": (B,)).
    """
    b, t, u1, _ = logits.shape
    logp = logits.float().log_softmax(-1)
    nxt = _next_labels(targets, blank)
    label = logp.gather(-1, nxt[:, None, :, None].expand(b, t, u1, 1))[..., 0]  # (B, T, U+1)
    return two_symbol_rnnt_loss(logp[..., blank], label, logit_lengths, target_lengths, reduction)


def simple_lattice(am: torch.Tensor, lm: torch.Tensor, targets: torch.Tensor, blank: int = 0,
                   lm_scale: float = 0.0, am_scale: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank and next-label log-probs of the trivial joiner ``logits(t, u) = am[t] + lm[u]``.

    am: (B, T, V) encoder-side logits; lm: (B, U+1, V) prediction-side logits; targets (B, U).
    Returns (blank_lp, label_lp), each (B, T, U+1), fp32 (autocast off: a bf16 normaliser is
    off by hundredths of a nat per cell). The normaliser ``logsumexp_v(am[t, v] + lm[u, v])``
    is one batched (T, V) x (V, U+1) product of exponentials shifted by their maxima, so
    nothing of size T x U x V is built. ``lm_scale``/``am_scale`` mix in the prediction-only
    and encoder-only log-probs (k2's ``rnnt_loss_smoothed``; icefall trains with 0.25 / 0.0),
    which keeps the simple heads from leaning on one side alone.
    """
    with torch.autocast(am.device.type, enabled=False):
        am, lm = am.float(), lm.float()
        am_max, lm_max = am.amax(-1, keepdim=True), lm.amax(-1, keepdim=True)  # (B, T, 1), (B, U+1, 1)
        prod = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
        norm = prod.clamp_min(torch.finfo(prod.dtype).tiny).log() + am_max + lm_max.transpose(1, 2)
        nxt = _next_labels(targets, blank)  # (B, U+1)
        at_t = nxt[:, None, :].expand(am.shape[0], am.shape[1], nxt.shape[1])  # (B, T, U+1)
        am_label = am.gather(2, at_t)  # (B, T, U+1)
        lm_label = lm.gather(2, nxt[..., None])[..., 0]  # (B, U+1)
        label_lp = am_label + lm_label[:, None, :] - norm
        blank_lp = am[..., blank:blank + 1] + lm[..., blank][:, None, :] - norm
        if lm_scale or am_scale:
            joint = 1.0 - lm_scale - am_scale
            lm_lp, am_lp = lm.log_softmax(-1), am.log_softmax(-1)
            label_lp = (joint * label_lp + lm_scale * lm_lp.gather(2, nxt[..., None])[..., 0][:, None, :]
                        + am_scale * am_lp.gather(2, at_t))
            blank_lp = (joint * blank_lp + lm_scale * lm_lp[..., blank][:, None, :]
                        + am_scale * am_lp[..., blank:blank + 1])
    return blank_lp, label_lp


def prune_ranges(blank_lp: torch.Tensor, label_lp: torch.Tensor, logit_lengths: torch.Tensor,
                 target_lengths: torch.Tensor, s_range: int) -> torch.Tensor:
    """Per frame, the first of ``s_range`` consecutive label positions the pruned joiner scores.

    blank_lp, label_lp: (B, T, U+1) log-probs of a (simple) lattice. The gradient of its loss
    is minus each arc's posterior. Per frame the alignment enters at some u, climbs by label
    arcs and leaves by the one blank arc; a window [s, s+S) keeps that segment when the blank
    leaves inside it and the climb did not start below it, so (k2's criterion) each frame gets
    the window maximising ``sum_{u in window} P(blank at u) - P(label arc (s-1) -> s)``.
    Then the windows are made a lattice in which every utterance still has a
    path from (0, 0) to (T_b - 1, U_b): starts never decrease, and step by at most
    ``s_range - 1`` from one frame to the next (consecutive windows overlap). Needs
    ``s_range <= U+1`` and ``T_b (s_range - 1) >= U_b`` (see :func:`pruned_window`).
    Returns (B, T) long starts in ``[0, max(U_b + 1 - s_range, 0)]``.
    """
    # Validation runs under inference mode, where enable_grad alone does not bring autograd back.
    with torch.inference_mode(False), torch.enable_grad():
        bl = blank_lp.detach().float().clone().requires_grad_()
        ll = label_lp.detach().float().clone().requires_grad_()
        loss = two_symbol_rnnt_loss(bl, ll, logit_lengths, target_lengths, reduction="sum")
        g_blank, g_label = torch.autograd.grad(loss, [bl, ll])
    p_blank, p_label = g_blank.abs(), g_label.abs()  # (B, T, U+1) arc posteriors
    b, t, u1 = p_blank.shape
    s = s_range
    cs = torch.nn.functional.pad(p_blank.cumsum(-1), (1, 0))  # (B, T, U+2)
    window = cs[..., s:] - cs[..., : u1 + 1 - s]  # (B, T, U+2-S): blank mass in [start, start + S)
    below = torch.nn.functional.pad(p_label[..., : u1 - s], (1, 0))  # label arc start-1 -> start
    want = (window - below).argmax(-1)  # (B, T)
    frames = torch.arange(t, device=p_blank.device)[None, :]  # (1, T)
    last = (target_lengths.long()[:, None] + 1 - s).clamp_min(0)  # (B, 1): the last valid start
    tb = logit_lengths.long()[:, None]
    # Reachable from (0, 0): start <= t (S-1); the end (T_b - 1, U_b) still reachable:
    # start >= last - (T_b - 1 - t)(S-1). Frames past T_b are padding (start 0).
    hi = torch.minimum(last, frames * (s - 1))
    lo = (last - (tb - 1 - frames) * (s - 1)).clamp_min(0)
    valid = frames < tb
    want = torch.where(valid, torch.maximum(torch.minimum(want, hi), lo), torch.zeros_like(want))
    starts = torch.cummax(want, dim=1).values  # never decreasing; stays within [lo, hi]
    # At most S-1 up per frame: start_t >= start_tau - (tau - t)(S-1) for every later tau.
    shifted = starts - frames * (s - 1)
    starts = torch.flip(torch.cummax(torch.flip(shifted, [1]), dim=1).values, [1]) + frames * (s - 1)
    return torch.where(valid, starts, torch.zeros_like(starts))


def pruned_window(s_range: int, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, u1: int) -> int:
    """The window actually used: at least ``s_range``, wide enough that every utterance's U_b
    labels fit in its T_b frames (``T_b (S-1) >= U_b``), and at most the lattice's U+1."""
    need = int(((target_lengths.long() + logit_lengths.long() - 1) // logit_lengths.long().clamp_min(1)).max()) + 1
    return max(1, min(max(s_range, need), u1))


def pruned_lattice(logp: torch.Tensor, targets: torch.Tensor, starts: torch.Tensor, u1: int,
                   blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter the pruned joiner's log-probs back into (B, T, U+1) blank / next-label lattices.

    logp: (B, T, S, V) normalised log-probs at label positions ``starts[:, :, None] + s``;
    cells outside the windows get a log-prob no path can afford.
    """
    b, t, s, _ = logp.shape
    idx = starts[:, :, None] + torch.arange(s, device=starts.device)  # (B, T, S), all <= U
    nxt = _next_labels(targets, blank).gather(1, idx.reshape(b, t * s)).view(b, t, s)
    label = logp.gather(-1, nxt[..., None])[..., 0]
    outside = logp.new_full((b, t, u1), _OUTSIDE)
    return outside.scatter(2, idx, logp[..., blank]), outside.scatter(2, idx, label)


def pruned_loss_scales(simple_scale: float, warm_steps: int, step: int | None) -> tuple[float, float]:
    """(simple weight, pruned weight) at training step ``step`` (None: warm), icefall's ramp.

    The windows come from the simple joiner, which knows nothing at first; so the simple loss
    starts at full weight and the pruned one at 0.1, and both move linearly to
    (``simple_scale``, 1.0) over ``warm_steps``.
    """
    if step is None or step >= warm_steps:
        return simple_scale, 1.0
    f = step / warm_steps
    return 1.0 - f * (1.0 - simple_scale), 0.1 + 0.9 * f
