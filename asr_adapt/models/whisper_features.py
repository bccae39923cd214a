"""Whisper log-mel features at a dynamic length, the window policy, and long-audio splitting.

Whisper was trained on 30 s windows: the stock pipeline pads every clip to 30 s and the
encoder always sees 1500 frames. On short clips most of that compute is spent on silence
(DESIGN.md §4: 87 GFLOP per window vs ~11 GFLOP for 5 s of speech), so asr-adapt pads a
batch only up to a *window*: the longest clip rounded up to ``step_s``, but never below
``min_window_s`` (a short context makes the zero-shot base model loop; see the decode
section of bench/RESULTS.md for the measurement behind the default) and never above 30 s.

The log-mel is the Hugging Face ``WhisperFeatureExtractor`` computation done in torch
(STFT, Slaney mel filters, log10, clamp to max-8 dB, (x+4)/4), batched and on the model's
device. Zero padding does not change a clip's features: padded samples are silence whose
log-mel is the floor, and the per-clip max used for clamping comes from the speech; so the
first ``W * 100`` frames of a clip's full 30 s features equal its features at window ``W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
FULL_WINDOW_S = 30.0
FULL_WINDOW_SAMPLES = int(FULL_WINDOW_S * SAMPLE_RATE)
# Default smallest window for dynamic-length decoding and training (seconds). Chosen from
# the trimmed-vs-padded measurement in bench/RESULTS.md ("Decode speed"): below it the
# zero-shot base model loops on some clips; the repetition guard catches what remains.
DEFAULT_MIN_WINDOW_S = 10.0
DEFAULT_WINDOW_STEP_S = 1.0
CONTEXTS = ("dynamic", "full")


def window_samples(
    n_samples: int,
    context: str = "dynamic",
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
    step_s: float = DEFAULT_WINDOW_STEP_S,
) -> int:
    """Samples a clip of ``n_samples`` is padded to under the given context policy.

    ``context="full"`` is the stock 30 s window. ``"dynamic"`` rounds up to ``step_s`` and
    clamps to ``[min_window_s, 30 s]``. The result is always a whole number of 20 ms
    encoder frames (even number of 10 ms mel frames) so conv2's stride divides it.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if context == "full":
        return FULL_WINDOW_SAMPLES
    step = max(int(round(step_s * SAMPLE_RATE)), 2 * HOP_LENGTH)
    w = math.ceil(max(n_samples, 1) / step) * step
    w = max(w, int(round(min_window_s * SAMPLE_RATE)))
    w = int(math.ceil(w / (2 * HOP_LENGTH)) * 2 * HOP_LENGTH)
    return min(w, FULL_WINDOW_SAMPLES)


class LogMel(torch.nn.Module):
    """Batched Whisper log-mel spectrogram.

    Input: list of (N_i,) float32 16 kHz arrays, each at most 30 s, and a window in samples.
    Output: (B, n_mels, W / 160) float32 features.
    """

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        filters = mel_filter_bank(
            num_frequency_bins=1 + N_FFT // 2,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        # (n_mels, F): buffers follow .to(device) but are not parameters (never trained/saved).
        self.register_buffer("filters", torch.from_numpy(filters.T.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.n_mels = n_mels

    @torch.no_grad()
    def forward(self, wavs: Sequence[np.ndarray], window: int) -> torch.Tensor:
        device = self.filters.device
        half = N_FFT // 2
        # Zeros after the window (not torch.stft's reflection) so a clip's features at a
        # short window are exactly the first frames of its stock 30 s features.
        batch = torch.zeros(len(wavs), window + half, dtype=torch.float32)
        for i, w in enumerate(wavs):
            n = min(len(w), window)
            batch[i, :n] = torch.from_numpy(np.asarray(w[:n], dtype=np.float32))
        batch = batch.to(device)
        batch = torch.nn.functional.pad(batch[:, None], (half, 0), mode="reflect")[:, 0]
        stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=self.window, center=False, return_complex=True)
        power = stft[..., :-1].abs() ** 2  # (B, F, W/160): drop the extra centre frame, as Whisper does
        mel = self.filters @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0


@dataclass(frozen=True)
class Piece:
    """A ≤30 s piece of one input clip: ``row`` is the clip's index, times in seconds."""

    row: int
    start: float
    end: float


def split_long_audio(wav: np.ndarray, max_s: float = FULL_WINDOW_S, search_s: float = 5.0) -> list[tuple[int, int]]:
    """Cut a clip into pieces of at most ``max_s`` seconds, at the quietest point.

    Each cut is placed at the lowest-energy 20 ms frame in the last ``search_s`` seconds
    before the limit, so pieces rarely split a word (a fixed 30 s grid cuts mid-word and
    both pieces then mis-recognise it).

    Returns:
        list of (start_sample, end_sample), covering the clip without gaps or overlap.
    """
    n = len(wav)
    limit = int(max_s * SAMPLE_RATE)
    if n <= limit:
        return [(0, n)]
    frame = SAMPLE_RATE // 50
    search = max(frame, min(int(search_s * SAMPLE_RATE), limit // 2))
    out: list[tuple[int, int]] = []
    start = 0
    while n - start > limit:
        lo, hi = start + limit - search, start + limit
        seg = wav[lo:hi]
        n_frames = len(seg) // frame
        energy = (seg[: n_frames * frame].reshape(n_frames, frame).astype(np.float64) ** 2).mean(axis=1)
        # Prefer the latest of equally quiet frames: longer pieces mean fewer pieces.
        best = n_frames - 1 - int(np.argmin(energy[::-1]))
        cut = lo + best * frame + frame // 2
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out
