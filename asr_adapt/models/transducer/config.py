"""Configuration of the streaming cascaded Conformer-transducer, and its presets.

One frozen dataclass describes the whole model (front end, both encoder passes,
prediction network, joiner, dynamic-chunk training, loss weights). It round-trips through
JSON (``to_dict`` / ``from_dict``) so a model directory is self-describing.

Presets are registered in :data:`PRESETS` by name (``tiny``, ``small``, ``large``); a
preset is a plain config, so ``dataclasses.replace(PRESETS.get("small"), vocab_size=...)``
customises one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from asr_adapt.registry import Registry

# Feature frames are 10 ms apart and the front end subsamples ``config.subsampling`` x
# (4x: 40 ms encoder frames, 8x: 80 ms). Chunk sizes below are in encoder frames.
FEATURE_SHIFT_S = 0.010


def _help(text: str, default: Any, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass(frozen=True)
class TransducerConfig:
    """Architecture and training-time behaviour of :class:`TransducerBackbone`."""

    # front end
    sample_rate: int = _help("input sample rate (Hz); audio is resampled to this on load", 16000)
    n_mels: int = _help("log-mel bins (25 ms window, 10 ms shift)", 80)
    subsampling_channels: int = _help("channels of the two stride-2 Conv2d subsampling layers", 128)
    subsampling: int = _help(
        "feature frames per encoder frame: 4 (two stride-2 convs, 40 ms) or a multiple of 4 "
        "(then 4x frames are stacked: 8 = 80 ms, half the encoder and transducer-lattice cost)", 4)
    # encoder (shared by both passes)
    d_model: int = _help("encoder width D", 256)
    num_heads: int = _help("attention heads (D must divide evenly)", 4)
    ffn_dim: int = _help("hidden width of each macaron feed-forward module", 1024)
    conv_kernel: int = _help("depthwise convolution kernel (frames); causal in the first pass", 15)
    first_pass_layers: int = _help("causal (streaming) Conformer blocks of the first pass", 8)
    second_pass_layers: int = _help("non-causal Conformer blocks of the second pass (0: no cascade)", 4)
    dropout: float = _help("dropout in attention, FFN and conv modules", 0.1)
    # prediction network and joiner
    vocab_size: int = _help("output vocabulary incl. blank (id 0); set from the tokenizer", 500)
    pred_dim: int = _help("prediction-network embedding width", 256)
    context_size: int = _help("tokens the stateless prediction network looks back (1 = bigram)", 2)
    joiner_dim: int = _help("joiner hidden width", 256)
    joiner_activation: str = _help("joiner nonlinearity: tanh (icefall, ESPnet) or relu (torchaudio)", "tanh")
    # dynamic-chunk training of the first pass (see README of the package)
    train_chunk_sizes: tuple[int, ...] = _help(
        "chunk sizes (encoder frames of 40 or 80 ms) drawn per batch when training the first pass",
        (4, 8, 16, 32),
    )
    train_left_chunks: tuple[int, ...] = _help(
        "left contexts (in chunks, -1 = unlimited) drawn per batch alongside the chunk size", (-1, 4, 8)
    )
    full_context_prob: float = _help(
        "probability that a training batch uses full attention in the first pass", 0.25
    )
    # loss
    first_pass_weight: float = _help("weight of the first-pass (streaming) transducer loss", 0.5)
    second_pass_weight: float = _help("weight of the second-pass (full-context) transducer loss", 0.5)
    ctc_weight: float = _help(
        "weight of an auxiliary CTC loss on each encoder pass (its own linear head, blank = 0); "
        "a direct path from labels to the encoder that does not go through the joiner", 0.0)
    prune_range: int = _help(
        "pruned transducer loss (k2/icefall): the joiner scores this many label positions per frame, "
        "chosen by a simple (additive-joiner) loss trained alongside; 0: the full (T, U+1) lattice", 0)
    simple_loss_scale: float = _help(
        "weight of the simple loss once warm (it starts at 1.0 and the pruned loss at 0.1; both "
        "ramp linearly over prune_warm_steps); with prune_range > 0 only", 0.5)
    prune_warm_steps: int = _help("training steps of the simple/pruned weight ramp", 2000)
    simple_lm_scale: float = _help("weight of the prediction-only log-probs in the simple loss (k2's smoothing)", 0.25)
    simple_am_scale: float = _help("weight of the encoder-only log-probs in the simple loss (k2's smoothing)", 0.0)
    tokenizer: str = _help("tokenizer kind (registry name): sentencepiece | char", "sentencepiece")

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError("head dimension must be even (rotary position encoding rotates pairs)")
        if self.first_pass_layers < 1:
            raise ValueError("the first pass needs at least one Conformer block")
        if self.second_pass_layers < 0:
            raise ValueError("second_pass_layers must be >= 0")
        if self.subsampling < 4 or self.subsampling % 4:
            raise ValueError(f"subsampling must be 4 or a multiple of 4, got {self.subsampling}")
        if self.ctc_weight < 0:
            raise ValueError("ctc_weight must be >= 0")
        if self.conv_kernel < 1:
            raise ValueError("conv_kernel must be >= 1")
        if self.context_size < 1:
            raise ValueError("context_size must be >= 1")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must include blank and at least one token")
        if self.n_mels < 7:
            raise ValueError("n_mels must be >= 7 for the two stride-2 convolutions")
        if any(c < 1 for c in self.train_chunk_sizes) or not self.train_chunk_sizes:
            raise ValueError("train_chunk_sizes must be a non-empty tuple of positive frame counts")
        if any(c < -1 for c in self.train_left_chunks) or not self.train_left_chunks:
            raise ValueError("train_left_chunks entries must be -1 (unlimited) or >= 0")
        if not 0.0 <= self.full_context_prob <= 1.0:
            raise ValueError("full_context_prob must be in [0, 1]")
        if self.first_pass_weight < 0 or self.second_pass_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.prune_range < 0 or self.prune_range == 1:
            raise ValueError("prune_range must be 0 (no pruning) or >= 2")
        if min(self.simple_lm_scale, self.simple_am_scale) < 0 or self.simple_lm_scale + self.simple_am_scale > 1:
            raise ValueError("simple_lm_scale and simple_am_scale must be >= 0 and sum to <= 1")
        if not 0.0 <= self.simple_loss_scale <= 1.0 or self.prune_warm_steps < 0:
            raise ValueError("simple_loss_scale must be in [0, 1] and prune_warm_steps >= 0")
        if self.second_pass_layers == 0 and self.second_pass_weight > 0:
            raise ValueError("second_pass_weight > 0 needs second_pass_layers > 0")

    @property
    def frame_s(self) -> float:
        """Seconds per encoder frame."""
        return FEATURE_SHIFT_S * self.subsampling

    @property
    def frame_ms(self) -> int:
        return round(self.frame_s * 1000)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransducerConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"unknown transducer config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: Registry[TransducerConfig] = Registry("transducer preset")

# Unit tests: builds and trains in milliseconds per step.
PRESETS.register(
    "tiny",
    TransducerConfig(
        subsampling_channels=8, d_model=32, num_heads=2, ffn_dim=64, conv_kernel=5,
        first_pass_layers=2, second_pass_layers=1, dropout=0.0, vocab_size=32,
        pred_dim=32, joiner_dim=32, train_chunk_sizes=(2, 4, 8), train_left_chunks=(-1, 2),
        tokenizer="char",
    ),
)
# About 12 M parameters: trainable on synthetic speech on two CPU cores.
PRESETS.register(
    "small",
    TransducerConfig(
        subsampling_channels=128, d_model=256, num_heads=4, ffn_dim=512, conv_kernel=15,
        first_pass_layers=8, second_pass_layers=4, vocab_size=500, pred_dim=256, joiner_dim=256,
    ),
)
# About 6 M parameters, 80 ms frames (8x), for a character vocabulary: the foundation that
# pretrains on two CPU cores in under two hours (egs/synth_tail/asr2/RESULTS.md), 25 MB.
PRESETS.register(
    "compact",
    TransducerConfig(
        subsampling_channels=64, subsampling=8, d_model=192, num_heads=4, ffn_dim=768, conv_kernel=15,
        first_pass_layers=6, second_pass_layers=2, vocab_size=160, pred_dim=192, joiner_dim=256,
        train_chunk_sizes=(2, 4, 8, 16), ctc_weight=0.3, tokenizer="char",
    ),
)
# GPU scale (~100 M parameters), as in the cascaded-encoder papers.
PRESETS.register(
    "large",
    TransducerConfig(
        subsampling_channels=256, d_model=512, num_heads=8, ffn_dim=2048, conv_kernel=31,
        first_pass_layers=12, second_pass_layers=6, vocab_size=4096, pred_dim=512, joiner_dim=640,
    ),
)
