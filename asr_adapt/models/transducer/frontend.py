"""Front end: log-mel features, global mean/variance normalisation, conv subsampling.

Everything here is *frame-local* so that it streams exactly:

* :class:`LogMel` uses ``MelSpectrogram(center=False)``: feature frame ``n`` depends only
  on samples ``[160 n, 160 n + 400)``, never on the utterance as a whole (no per-utterance
  normalisation, no dither).
* :class:`GlobalCMVN` subtracts a mean and scales by an inverse std computed once from
  training data (:meth:`GlobalCMVN.fit`) and stored as buffers, i.e. saved with the model.
* :class:`Conv2dSubsampling` pads 3 feature frames on the left and uses unpadded
  (valid) stride-2 convolutions in time (4x). With ``stack = k > 1`` it then concatenates
  ``k`` consecutive 4x frames into one encoder frame (``S = 4k``: 8x = 80 ms frames), which
  halves the encoder's sequence and the transducer lattice; on a CPU that is most of a
  training step. Encoder frame ``j`` depends on feature frames ``[S j - 3, S j + S - 1]``:
  nothing beyond its own group of ``S`` frames, so it needs no look-ahead. Streaming keeps
  the feature frames not yet consumed by a complete output frame as ``cache`` and prepends
  them to the next chunk, which makes chunk-by-chunk output identical to the whole-sequence
  output. ``T`` feature frames give ``T // S`` encoder frames either way.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

LEFT_PAD = 3  # feature frames of left context each encoder frame sees (see module docstring)
CONV_STRIDE = 4  # the two stride-2 convolutions


class LogMel(nn.Module):
    """(B, N) waveforms at 16 kHz -> (B, T, n_mels) log-mel, T = 1 + (N - 400) // 160."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80) -> None:
        super().__init__()
        self.win = int(0.025 * sample_rate)
        self.hop = int(0.010 * sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=self.win, win_length=self.win, hop_length=self.hop,
            n_mels=n_mels, center=False, power=2.0,
        )

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Feature frames produced from ``num_samples`` samples (0 when shorter than a window)."""
        return torch.clamp((num_samples - self.win) // self.hop + 1, min=0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] < self.win:  # shorter than one window: no frame, not an error
            return wav.new_zeros(wav.shape[0], 0, self.mel.n_mels)
        # Computed in fp32 whatever the autocast state: log of tiny powers is ill-conditioned.
        spec = self.mel(wav.float())  # (B, n_mels, T)
        return torch.log(spec + 1e-6).transpose(1, 2)


class GlobalCMVN(nn.Module):
    """Global mean/variance normalisation with statistics stored in the model.

    Buffers ``mean`` and ``istd`` (n_mels,) start as the identity; :meth:`fit` sets them
    from features of training data.
    """

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("istd", torch.ones(n_mels))

    @torch.no_grad()
    def fit(self, feats: list[torch.Tensor], floor: float = 1e-2) -> None:
        """Set the statistics from a list of (T_i, n_mels) un-normalised feature matrices."""
        x = torch.cat([f.reshape(-1, f.shape[-1]).double() for f in feats])
        if x.shape[0] < 2:
            raise ValueError("GlobalCMVN.fit needs at least two feature frames")
        self.mean.copy_(x.mean(0).float())
        self.istd.copy_(1.0 / x.std(0).clamp_min(floor).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, n_mels, T).

        Channels-first, the layout SpecAugment expects: the backbone names this module as
        its feature module and training masks its input with a forward pre-hook.
        """
        return (x - self.mean[:, None]) * self.istd[:, None]


class Conv2dSubsampling(nn.Module):
    """(B, T, F) features -> (B, T // S, D), S = 4 * stack; left-padded, look-ahead free (see module doc)."""

    def __init__(self, n_mels: int, channels: int, d_model: int, dropout: float = 0.0, stack: int = 1) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError("stack must be >= 1")
        self.stack = stack
        self.stride = CONV_STRIDE * stack
        self.receptive = self.stride + LEFT_PAD  # feature frames one encoder frame sees
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
        )
        freq = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq * stack, d_model)
        self.dropout = nn.Dropout(dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths // self.stride

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, F) already-padded frames -> (B, (L - receptive) // S + 1, D)."""
        y = self.conv(x.unsqueeze(1))  # (B, C, T4, F')
        b, c, t, f = y.shape
        y = y.transpose(1, 2).reshape(b, t, c * f)
        t_out = t // self.stack  # stack consecutive 4x frames (a no-op for stack = 1)
        y = y[:, : t_out * self.stack].reshape(b, t_out, self.stack * c * f)
        return self.dropout(self.out(y))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> (B, T // S, D), (B,) lengths // S."""
        x = nn.functional.pad(x, (0, 0, LEFT_PAD, 0))
        if x.shape[1] < self.receptive:
            return x.new_zeros(x.shape[0], 0, self.out.out_features), self.output_lengths(lengths)
        return self._run(x), self.output_lengths(lengths)

    def init_cache(self, batch: int, n_mels: int, device=None, dtype=None) -> torch.Tensor:
        """(B, 3, F) zeros: the same left padding :meth:`forward` adds."""
        return torch.zeros(batch, LEFT_PAD, n_mels, device=device, dtype=dtype)

    def streaming_forward(
        self, x: torch.Tensor, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk. x: (B, T_c, F) new feature frames; cache: (B, T_k, F) unconsumed ones.

        Returns (B, n, D) complete encoder frames and the new cache (the feature frames
        from ``S n`` on). Feeding ``S C`` frames per call yields ``C`` encoder frames per call.
        """
        buf = torch.cat([cache, x], dim=1)
        if buf.shape[1] < self.receptive:
            return buf.new_zeros(buf.shape[0], 0, self.out.out_features), buf
        n = (buf.shape[1] - self.receptive) // self.stride + 1
        return self._run(buf[:, : self.stride * (n - 1) + self.receptive]), buf[:, self.stride * n :]
