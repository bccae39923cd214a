"""The streaming cascaded Conformer-transducer as a :class:`~asr_adapt.models.base.Backbone`.

waveform -> log-mel -> global CMVN -> 4x subsampling -> causal first pass (chunked
attention, streams) -> non-causal second pass; one stateless prediction network and one
joiner (with a per-pass encoder projection) score both passes. Training sums the two
transducer losses; the first pass is trained with a chunk size drawn per batch (and
sometimes full context), so one model decodes at several latencies.

Adapters are forward hooks on the Conformer blocks named by :meth:`injection_points`;
the offline and the streaming encoder call those same modules, so hooks fire in both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from asr_adapt import routing
from asr_adapt.fileio import atomic_write, atomic_write_json
from asr_adapt.models.base import BACKBONES, Backbone, InjectionPoints
from asr_adapt.models.transducer.cascade import CascadedEncoder, EncoderOutput, StreamingState
from asr_adapt.models.transducer.config import PRESETS, TransducerConfig
from asr_adapt.models.transducer.frontend import GlobalCMVN, LogMel
from asr_adapt.models.transducer.joiner import Joiner
from asr_adapt.models.transducer.loss import (
    lattice_rnnt_loss,
    prune_ranges,
    pruned_lattice,
    pruned_loss_scales,
    pruned_window,
    simple_lattice,
    two_symbol_rnnt_loss,
)
from asr_adapt.models.transducer.predictor import StatelessPredictor
from asr_adapt.models.transducer.shipped import SHIPPED, resolve_transducer
from asr_adapt.models.transducer.tokenizer import Tokenizer, load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@BACKBONES.decorator("transducer")
class TransducerBackbone(Backbone):
    """Cascaded streaming Conformer-transducer.

    Build: ``TransducerBackbone.from_preset("small", tokenizer)`` or
    ``TransducerBackbone(config, tokenizer)``; load: :meth:`from_pretrained`.
    Modules: ``fbank`` -> ``cmvn`` -> ``encoder`` (``subsampling``, ``first_pass``,
    ``second_pass``) -> ``joiner`` with ``predictor``. Blank is token 0.
    """

    family = "transducer"

    def __init__(self, config: TransducerConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} but the tokenizer has {tokenizer.vocab_size} tokens"
            )
        self.config, self.tokenizer = config, tokenizer
        self.fbank = LogMel(config.sample_rate, config.n_mels)
        self.cmvn = GlobalCMVN(config.n_mels)
        self.encoder = CascadedEncoder(config)
        self.predictor = StatelessPredictor(config.vocab_size, config.pred_dim, config.context_size)
        self.joiner = Joiner(config.d_model, config.pred_dim, config.joiner_dim, config.vocab_size,
                             self.encoder.passes, config.joiner_activation)
        # Auxiliary CTC heads (one per pass, blank = 0 as in the transducer): labels reach the
        # encoder directly instead of only through the joiner's tanh, which is what lets a
        # young model leave the all-blank plateau (see egs/synth_tail/asr2/RESULTS.md).
        # The heads always emit at 40 ms: with 8x subsampling each 80 ms frame predicts two CTC
        # frames, since CTC needs at least one frame per output token and characters come at
        # up to ~20/s in fast speech.
        self.ctc_upsample = config.subsampling // 4
        self.ctc = (
            nn.ModuleDict({p: nn.Linear(config.d_model, config.vocab_size * self.ctc_upsample)
                           for p in self.encoder.passes})
            if config.ctc_weight > 0 else None
        )
        # Pruned transducer loss: the simple joiner's linear heads (encoder side per pass).
        self.simple_am = (nn.ModuleDict({p: nn.Linear(config.d_model, config.vocab_size) for p in self.encoder.passes})
                          if config.prune_range else None)
        self.simple_lm = nn.Linear(config.pred_dim, config.vocab_size) if config.prune_range else None
        self.chunk_rng = random.Random(0)  # dynamic-chunk draws; seeded so training is reproducible

    @classmethod
    def from_preset(cls, name: str, tokenizer: Tokenizer, **overrides) -> TransducerBackbone:
        """A randomly initialised model of preset ``name`` sized to ``tokenizer``."""
        cfg = dataclasses.replace(PRESETS.get(name), vocab_size=tokenizer.vocab_size, tokenizer=tokenizer.kind,
                                  **overrides)
        return cls(cfg, tokenizer)

    # ------------------------------------------------------------------ features
    def raw_features(self, wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised log-mel (B, T, F) and frame counts (B,) of 16 kHz waveforms."""
        device = self.cmvn.mean.device
        n = torch.tensor([len(w) for w in wavs], dtype=torch.long)
        batch = torch.zeros(len(wavs), max(int(n.max()), 1))
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.as_tensor(np.asarray(w, dtype=np.float32))
        feats = self.fbank.to(device)(batch.to(device))
        return feats, self.fbank.num_frames(n).to(device)

    def features(self, wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features (B, T, F) and lengths (B,): the encoder's input."""
        feats, lens = self.raw_features(wavs)
        return self.cmvn(feats.transpose(1, 2)).transpose(1, 2), lens

    @torch.no_grad()
    def fit_cmvn(self, wavs: Sequence[np.ndarray]) -> None:
        """Set the global normalisation statistics from training audio."""
        feats, lens = self.raw_features(wavs)
        self.cmvn.fit([f[: int(n)] for f, n in zip(feats, lens)])

    # ------------------------------------------------------------------ encoder
    def encode(self, feats, lengths, chunk_size: int = -1, left_chunks: int = -1, second_pass: bool = True) -> EncoderOutput:
        """feats: (B, T_f, F) normalised, lengths: (B,) -> first/second pass (B, T, D), lengths (B,)."""
        return self.encoder(feats, lengths, chunk_size, left_chunks, second_pass)

    def init_streaming_state(self, batch: int, chunk_size: int, left_chunks: int = -1) -> StreamingState:
        return self.encoder.init_state(batch, chunk_size, left_chunks, self.cmvn.mean.device)

    def streaming_forward(self, x, lengths, state: StreamingState, final: bool = False):
        """First pass on the next (B, T_c, F) normalised feature frames; see :class:`CascadedEncoder`.

        Returns ``(y (B, T_o, D), lengths (B,), state)``.
        """
        return self.encoder.streaming_forward(x, lengths, state, final)

    # ------------------------------------------------------------------ training
    def sample_chunking(self) -> tuple[int, int]:
        """(chunk_size, left_chunks) for one training batch; (-1, -1) is full context."""
        cfg = self.config
        if self.chunk_rng.random() < cfg.full_context_prob:
            return -1, -1
        return self.chunk_rng.choice(cfg.train_chunk_sizes), self.chunk_rng.choice(cfg.train_left_chunks)

    def transducer_loss(self, enc, lengths, pass_name, targets, target_lengths, step: int | None = None) -> torch.Tensor:
        """enc: (B, T, D), targets: (B, U) padded ids -> mean transducer loss (fp32 logits).

        With ``config.prune_range`` the loss is the weighted simple + pruned pair of
        :func:`pruned_loss_scales` at training step ``step`` (None: warm).
        """
        blank = self.predictor.start_context(targets.shape[0], targets.device)[:, :1]
        pred = self.predictor(torch.cat([blank, targets], dim=1))  # (B, U+1, P)
        dec_p = self.joiner.project_decoder(pred)  # (B, U+1, J)
        enc_p = self.joiner.project_encoder(enc, pass_name)  # (B, T, J)
        if not self.config.prune_range:
            logits = self.joiner(enc_p[:, :, None], dec_p[:, None])  # (B, T, U+1, V)
            return lattice_rnnt_loss(logits, targets, lengths, target_lengths)
        u1 = pred.shape[1]
        cfg = self.config
        blank_s, label_s = simple_lattice(self.simple_am[pass_name](enc), self.simple_lm(pred), targets,
                                          lm_scale=cfg.simple_lm_scale, am_scale=cfg.simple_am_scale)
        simple = two_symbol_rnnt_loss(blank_s, label_s, lengths, target_lengths)
        s = pruned_window(cfg.prune_range, lengths, target_lengths, u1)
        starts = prune_ranges(blank_s, label_s, lengths, target_lengths, s)  # (B, T)
        idx = starts[:, :, None] + torch.arange(s, device=starts.device)  # (B, T, S)
        b, t, _ = idx.shape
        dec_g = dec_p.gather(1, idx.view(b, t * s, 1).expand(-1, -1, dec_p.shape[-1])).view(b, t, s, -1)
        logp = self.joiner(enc_p[:, :, None], dec_g).float().log_softmax(-1)  # (B, T, S, V)
        pruned = two_symbol_rnnt_loss(*pruned_lattice(logp, targets, starts, u1), lengths, target_lengths)
        w_simple, w_pruned = pruned_loss_scales(cfg.simple_loss_scale, cfg.prune_warm_steps, step)
        return w_simple * simple + w_pruned * pruned

    def ctc_loss(self, enc, lengths, pass_name, targets, target_lengths) -> torch.Tensor:
        """enc: (B, T, D) -> CTC loss of the pass's head, summed per utterance, mean over the batch."""
        logp = self.ctc_log_probs(enc, pass_name).transpose(0, 1)  # (T k, B, V)
        per_utt = torch.nn.functional.ctc_loss(logp, targets, lengths * self.ctc_upsample, target_lengths,
                                               blank=0, reduction="none", zero_infinity=True)
        return per_utt.mean()

    def ctc_log_probs(self, enc: torch.Tensor, pass_name: str) -> torch.Tensor:
        """(B, T, D) -> (B, T k, V) fp32 log-probs of the pass's CTC head (k = subsampling / 4)."""
        b, t, _ = enc.shape
        logits = self.ctc[pass_name](enc).float().view(b, t * self.ctc_upsample, -1)
        return logits.log_softmax(-1)

    def encode_targets(self, texts: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, U) padded token ids (U >= 1) and (B,) lengths."""
        ids = [self.tokenizer.encode(t) for t in texts]
        lens = torch.tensor([len(i) for i in ids], dtype=torch.long)
        out = torch.zeros(len(ids), max(1, int(lens.max())), dtype=torch.long)
        for i, seq in enumerate(ids):
            out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out.to(device), lens.to(device)

    def loss_terms(self, wavs, texts, langs, chunk_size: int | None = None, left_chunks: int | None = None,
                   step: int | None = None):
        """{"first_pass": loss, "second_pass": loss, "loss": weighted sum} for one batch.

        With ``ctc_weight > 0`` also ``ctc_first_pass``/``ctc_second_pass``; the total is then
        ``(1 - w) * transducer + w * ctc`` per pass. Chunking defaults to a random draw when
        training and full context otherwise. ``step``: the training step (the pruned loss's
        warm-up; None: warm).
        """
        feats, flens = self.features(wavs)
        return self.loss_terms_from_features(feats, flens, texts, langs, chunk_size, left_chunks, step=step)

    def loss_terms_from_features(self, feats, flens, texts, langs, chunk_size: int | None = None,
                                 left_chunks: int | None = None, targets=None, step: int | None = None):
        """:meth:`loss_terms` on normalised features (B, T_f, F) and lengths (B,) (e.g. cached ones).

        ``targets``: already tokenised ``(ids (B, U), lengths (B,))`` instead of ``texts``.
        """
        if chunk_size is None:
            chunk_size, left_chunks = self.sample_chunking() if self.training else (-1, -1)
        targets, tlens = targets if targets is not None else self.encode_targets(texts, feats.device)
        with routing.use(list(langs)):
            out = self.encode(feats, flens, chunk_size, -1 if left_chunks is None else left_chunks)
        if int(out.lengths.min()) < 1:
            raise ValueError("an utterance is shorter than one encoder frame; drop it from the batch")
        cfg, terms, total = self.config, {}, 0.0
        w_ctc = cfg.ctc_weight if self.ctc is not None else 0.0
        for name, enc, weight in (("first_pass", out.first, cfg.first_pass_weight),
                                  ("second_pass", out.second, cfg.second_pass_weight)):
            if enc is None:
                continue
            terms[name] = self.transducer_loss(enc, out.lengths, name, targets, tlens, step)
            pass_loss = terms[name]
            if w_ctc:
                terms[f"ctc_{name}"] = self.ctc_loss(enc, out.lengths, name, targets, tlens)
                pass_loss = (1 - w_ctc) * pass_loss + w_ctc * terms[f"ctc_{name}"]
            total = total + weight * pass_loss
        terms["loss"] = total
        return terms

    def compute_loss(self, wavs, texts, langs) -> torch.Tensor:
        return self.loss_terms(wavs, texts, langs)["loss"]

    # ------------------------------------------------------------------ adapters
    def feature_module(self) -> str | None:
        return "cmvn"  # its input is the (B, F, T) log-mel; SpecAugment hooks it in training

    def injection_points(self) -> InjectionPoints:
        blocks, linears = {}, {}
        for name in self.encoder.passes:
            enc = getattr(self.encoder, name)
            prefix = [f"encoder.{name}.layers.{i}" for i in range(len(enc.layers))]
            blocks[name] = prefix
            attn = ("q_proj", "k_proj", "v_proj", "out_proj")
            linears[f"{name}.attn"] = [f"{p}.attn.{lin}" for p in prefix for lin in attn]
            linears[f"{name}.ffn"] = [f"{p}.{f}.{lin}" for p in prefix for f in ("ffn1", "ffn2") for lin in ("fc1", "fc2")]
        # The output side: a locale whose script the foundation never emitted needs its output
        # remapped (a Greek "a" sound to "α" rather than "a"), which an encoder adapter cannot
        # do through the frozen output layer (the joiner's logits), and the prediction network
        # has never seen those characters as history (its output, before the joiner).
        blocks["output"] = ["predictor", "joiner"]
        return InjectionPoints(blocks=blocks, linears=linears)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """``config.json`` + ``model.safetensors`` + tokenizer files, each written atomically.

        ``dtype`` (e.g. ``torch.float16``) stores the weights at lower precision to halve the
        file (a shipped foundation); CMVN statistics stay float32, and loading casts back.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() and not k.startswith("cmvn.") else v
                     for k, v in state.items()}
        atomic_write(directory / WEIGHTS_FILE, st_save(state))
        atomic_write_json(directory / CONFIG_FILE, {"backbone": "transducer", "config": self.config.to_dict()})

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> TransducerBackbone:
        """Load a directory written by :meth:`save_pretrained`, or a shipped model by name
        (e.g. ``transducer-synth-compact``, see :mod:`.shipped`), in eval mode."""
        directory = resolve_transducer(name_or_dir)
        if not (directory / CONFIG_FILE).exists():
            raise FileNotFoundError(
                f"{directory}: no {CONFIG_FILE}; expected a directory written by save_pretrained or one of the "
                f"shipped models {SHIPPED.names()}")
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if meta.get("backbone") != "transducer":
            raise ValueError(f"{directory}: not a transducer model (backbone={meta.get('backbone')!r})")
        model = cls(TransducerConfig.from_dict(meta["config"]), load_tokenizer(directory))
        own = model.state_dict()
        state = {k: v.to(own[k].dtype) if k in own else v
                 for k, v in st_load((directory / WEIGHTS_FILE).read_bytes()).items()}
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()
