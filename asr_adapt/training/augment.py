"""Input noise for noisy-student training: waveform noise, speed perturbation, SpecAugment.

Waveform augmentations run in the data loader workers (numpy, per utterance); SpecAugment
runs on log-mel features inside the model's forward through a pre-hook that the training
module installs on the backbone's feature input (see ``AdaptationModule``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class AugmentConfig:
    noise_prob: float = field(default=0.0, metadata={"help": "probability of adding white/pink noise to an utterance"})
    snr_db: tuple[float, float] = field(default=(10.0, 30.0), metadata={"help": "SNR range (dB) for additive noise"})
    speed_prob: float = field(default=0.0, metadata={"help": "probability of speed perturbation"})
    speeds: tuple[float, ...] = field(default=(0.9, 1.1), metadata={"help": "speed factors to choose from"})
    spec_augment: bool = field(default=False, metadata={"help": "apply SpecAugment to log-mel features"})
    freq_masks: int = field(default=2, metadata={"help": "SpecAugment: number of frequency masks"})
    freq_width: int = field(default=10, metadata={"help": "SpecAugment: max width of a frequency mask (bins)"})
    time_masks: int = field(default=2, metadata={"help": "SpecAugment: number of time masks"})
    time_width: float = field(default=0.05, metadata={"help": "SpecAugment: max time-mask width as a fraction of length"})
    spectral_envelope: float = field(default=0.0, metadata={
        "help": "max amplitude (log-mel, natural log) of a random smooth spectral envelope added to each utterance "
                "(a voice-timbre / channel equaliser augmentation); 0: off"})

    def __post_init__(self) -> None:
        for name in ("noise_prob", "speed_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError("snr_db must be (low, high)")
        if any(s <= 0 for s in self.speeds):
            raise ValueError("speeds must be positive")
        if self.spectral_envelope < 0:
            raise ValueError("spectral_envelope must be >= 0")

    @property
    def feature_level(self) -> bool:
        """Whether anything applies to features (SpecAugment or the spectral envelope)."""
        return self.spec_augment or self.spectral_envelope > 0

    @property
    def active(self) -> bool:
        return self.noise_prob > 0 or self.speed_prob > 0 or self.spec_augment


def add_noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise at ``snr_db``. ``wav``: (N,) float32."""
    power = float(np.mean(wav**2)) + 1e-10
    noise = rng.standard_normal(len(wav)).astype(np.float32)
    noise *= np.sqrt(power / (10 ** (snr_db / 10)))
    return (wav + noise).astype(np.float32)


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation (tempo and pitch change) by resampling. (N,) -> (N/factor,)."""
    n_out = max(1, int(round(len(wav) / factor)))
    x_old = np.arange(len(wav), dtype=np.float64)
    x_new = np.linspace(0, len(wav) - 1, n_out)
    return np.interp(x_new, x_old, wav).astype(np.float32)


def augment_waveform(wav: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.speed_prob and rng.random() < cfg.speed_prob:
        wav = speed_perturb(wav, float(rng.choice(cfg.speeds)))
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        wav = add_noise(wav, float(rng.uniform(*cfg.snr_db)), rng)
    return wav


def spectral_envelope(feats: torch.Tensor, amplitude: float, scale: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, order: int = 4) -> torch.Tensor:
    """Add a random smooth curve over the mel axis to each utterance. ``feats``: (B, F, T).

    The curve is ``sum_k a_k cos(pi k f / (F - 1)) / k`` for k = 1..order with a_k uniform in
    [-amplitude, amplitude]: a tilt plus a few broad bumps, what a different vocal tract, an
    equaliser or a microphone does to a log spectrum. Voices whose spectral envelope lies
    outside the training voices' (espeak-ng's ``tone`` equalisers, e.g. variant m8) are the
    held-out voices a model fails on. ``scale`` (F,) maps the curve into normalised features
    (CMVN's inverse std) when ``feats`` are already normalised.
    """
    b, f, _ = feats.shape
    k = torch.arange(1, order + 1, dtype=torch.float32)
    basis = torch.cos(torch.pi * k[:, None] * torch.arange(f, dtype=torch.float32)[None] / max(1, f - 1)) / k[:, None]
    coef = (torch.rand(b, order, generator=generator) * 2 - 1) * amplitude  # (B, order)
    curve = (coef @ basis).to(feats.device, feats.dtype)  # (B, F)
    if scale is not None:
        curve = curve * scale.to(curve)
    return feats + curve[:, :, None]


def spec_augment(feats: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frequency and time masking. ``feats``: (B, F, T) log-mel; masked with each row's mean."""
    out = feats.clone()
    B, F, T = out.shape
    for b in range(B):
        fill = out[b].mean()
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, F - w), (1,), generator=generator))
            out[b, f0 : f0 + w, :] = fill
        max_t = max(1, int(cfg.time_width * T))
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max_t + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, T - w), (1,), generator=generator))
            out[b, :, t0 : t0 + w] = fill
    return out
