"""Convert a CTranslate2 / faster-whisper Whisper directory into a Hugging Face one.

The output loads with ``WhisperForConditionalGeneration.from_pretrained`` and
``WhisperProcessor.from_pretrained`` (no hub access): ``config.json``,
``model.safetensors``, ``generation_config.json``, tokenizer files and
``preprocessor_config.json``.

Weight mapping (CTranslate2 name -> Hugging Face name) is a table of rules, one per
sub-layer kind, rather than a chain of conditions; :data:`IGNORED_SCALARS` lists the
CTranslate2 spec flags that carry no weights. Every weight of the source must be consumed
and every parameter of the target produced, or the import fails.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_adapt.fileio import atomic_directory, atomic_write_json
from asr_adapt.models.ct2_format import CT2Model, dequantize, read_ct2
from asr_adapt.models.ct2_tokenizer import write_tokenizer_files

log = logging.getLogger(__name__)

# Scalar spec options CTranslate2 stores next to the weights (activation id, pre-norm flag,
# number of heads, ...). Heads are read from here; the rest only describe the fixed Whisper
# architecture.
IGNORED_SCALARS = frozenset(
    {
        "activation", "alibi", "alibi_use_positive_positions", "alignment_heads", "alignment_layer",
        "num_heads", "pre_norm", "scale_alibi", "scale_embeddings", "start_from_zero_embedding",
        "layernorm_embedding", "multi_query_attention", "num_heads_kv", "rotary_dim",
        "rotary_interleave", "rotary_scaling_type", "rotary_scaling_factor", "rotary_base",
        "parallel_residual", "shared_layer_norm", "sliding_window", "head_dim",
    }
)  # fmt: skip

Splitter = Callable[[np.ndarray], list[np.ndarray]]


def _identity(x: np.ndarray) -> list[np.ndarray]:
    return [x]


def _split(n: int) -> Splitter:
    def split(x: np.ndarray) -> list[np.ndarray]:
        if x.shape[0] % n:
            raise ValueError(f"cannot split dim {x.shape[0]} into {n} equal parts")
        return list(np.split(x, n, axis=0))

    return split


def _qkv_bias(x: np.ndarray) -> list[np.ndarray]:
    """Fused q,k,v bias -> q and v biases. Whisper's key projection has no bias; CTranslate2
    stores zeros there to keep the fused layer uniform, so anything else is a wrong mapping."""
    q, k, v = _split(3)(x)
    if np.abs(k).max(initial=0.0) > 1e-6:
        raise ValueError("fused q,k,v bias has a non-zero key part; not a Whisper checkpoint")
    return [q, v]


def _kv_bias(x: np.ndarray) -> list[np.ndarray]:
    k, v = _split(2)(x)
    if np.abs(k).max(initial=0.0) > 1e-6:
        raise ValueError("fused k,v bias has a non-zero key part; not a Whisper checkpoint")
    return [v]


@dataclass(frozen=True)
class Rule:
    """One CTranslate2 name pattern and the Hugging Face name(s) it becomes.

    pattern: regex over the CTranslate2 name; its groups fill ``targets`` via ``str.format``.
    targets: Hugging Face names, one per part returned by ``split``.
    split: (array) -> parts; fused projections are cut along the output rows.
    """

    pattern: str
    targets: tuple[str, ...]
    split: Splitter = _identity


_ATT = r"(encoder|decoder)/layer_(\d+)/self_attention"
_X = r"decoder/layer_(\d+)/attention"
_LAYER = r"(encoder|decoder)/layer_(\d+)"
_LN = {"gamma": "weight", "beta": "bias"}

RULES: tuple[Rule, ...] = (
    Rule(r"encoder/conv([12])/(weight|bias)", ("model.encoder.conv{0}.{1}",)),
    Rule(r"encoder/position_encodings/encodings", ("model.encoder.embed_positions.weight",)),
    Rule(r"decoder/position_encodings/encodings", ("model.decoder.embed_positions.weight",)),
    Rule(r"decoder/embeddings/weight", ("model.decoder.embed_tokens.weight",)),
    Rule(r"(encoder|decoder)/layer_norm/(gamma|beta)", ("model.{0}.layer_norm.{1}",)),
    Rule(
        _ATT + r"/linear_0/weight",
        tuple(f"model.{{0}}.layers.{{1}}.self_attn.{p}_proj.weight" for p in "qkv"),
        _split(3),
    ),
    Rule(_ATT + r"/linear_0/bias", ("model.{0}.layers.{1}.self_attn.q_proj.bias", "model.{0}.layers.{1}.self_attn.v_proj.bias"), _qkv_bias),
    Rule(_ATT + r"/linear_1/(weight|bias)", ("model.{0}.layers.{1}.self_attn.out_proj.{2}",)),
    Rule(_ATT + r"/layer_norm/(gamma|beta)", ("model.{0}.layers.{1}.self_attn_layer_norm.{2}",)),
    Rule(_X + r"/linear_0/(weight|bias)", ("model.decoder.layers.{0}.encoder_attn.q_proj.{1}",)),
    Rule(_X + r"/linear_1/weight", ("model.decoder.layers.{0}.encoder_attn.k_proj.weight", "model.decoder.layers.{0}.encoder_attn.v_proj.weight"), _split(2)),
    Rule(_X + r"/linear_1/bias", ("model.decoder.layers.{0}.encoder_attn.v_proj.bias",), _kv_bias),
    Rule(_X + r"/linear_2/(weight|bias)", ("model.decoder.layers.{0}.encoder_attn.out_proj.{1}",)),
    Rule(_X + r"/layer_norm/(gamma|beta)", ("model.decoder.layers.{0}.encoder_attn_layer_norm.{1}",)),
    Rule(_LAYER + r"/ffn/linear_([01])/(weight|bias)", ("model.{0}.layers.{1}.fc{2}.{3}",)),
    Rule(_LAYER + r"/ffn/layer_norm/(gamma|beta)", ("model.{0}.layers.{1}.final_layer_norm.{2}",)),
)  # fmt: skip

# Names that hold the same tensor as another one (tied output projection).
TIED = {"decoder/projection/weight": "decoder/embeddings/weight"}

_COMPILED = [(re.compile(r.pattern + r"$"), r) for r in RULES]


def _fmt_group(g: str) -> str:
    # Linear ffn indices are 0/1 in CTranslate2 and fc1/fc2 in Hugging Face; LayerNorm
    # parameters are gamma/beta vs weight/bias.
    return _LN.get(g, g)


def map_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 float32 weights -> Hugging Face ``WhisperForConditionalGeneration`` state dict.

    Raises ``KeyError`` listing every CTranslate2 variable no rule consumes.
    """
    out: dict[str, np.ndarray] = {}
    unmapped = []
    for name, value in weights.items():
        if name.rsplit("/", 1)[-1] in IGNORED_SCALARS and value.ndim == 0:
            continue
        if name in TIED:
            if not np.array_equal(value, weights[TIED[name]]):
                raise ValueError(f"{name} differs from {TIED[name]}; untied output projections are not supported")
            continue
        for regex, rule in _COMPILED:
            m = regex.match(name)
            if m:
                groups = list(m.groups())
                if "/ffn/linear_" in name:  # linear_0 -> fc1, linear_1 -> fc2
                    groups[2] = str(int(groups[2]) + 1)
                groups = [_fmt_group(g) for g in groups]
                parts = rule.split(value)
                for target, part in zip(rule.targets, parts, strict=True):
                    out[target.format(*groups)] = np.ascontiguousarray(part)
                break
        else:
            unmapped.append(name)
    if unmapped:
        raise KeyError(f"CTranslate2 variables with no Hugging Face counterpart: {unmapped}")
    return out


# ------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class WhisperDims:
    """Architecture read off the weights (never trusted from a side file)."""

    n_mels: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int


def infer_dims(model: CT2Model) -> WhisperDims:
    def n_layers(side: str) -> int:
        idx = {int(m.group(1)) for n in model.names() if (m := re.match(rf"{side}/layer_(\d+)/", n))}
        if idx != set(range(len(idx))) or not idx:
            raise ValueError(f"{side} layers are missing or not numbered 0..N-1: {sorted(idx)}")
        return len(idx)

    conv1 = model.get("encoder/conv1/weight")
    return WhisperDims(
        n_mels=int(conv1.shape[1]),
        d_model=int(conv1.shape[0]),
        encoder_layers=n_layers("encoder"),
        decoder_layers=n_layers("decoder"),
        encoder_heads=int(model.get("encoder/num_heads")),
        decoder_heads=int(model.get("decoder/num_heads")),
        encoder_ffn=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        vocab_size=int(model.get("decoder/embeddings/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
    )


# ------------------------------------------------------------------------------ import


def _find(dirs: Sequence[Path], name: str) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def _model_source(dirs: Sequence[Path]) -> list[Path]:
    """``model.bin``, or ``model.bin.part1..N`` (any of the dirs) to be read as one stream."""
    whole = _find(dirs, "model.bin")
    if whole:
        return [whole]
    parts = []
    for i in range(1, 1000):
        p = _find(dirs, f"model.bin.part{i}")
        if not p:
            break
        parts.append(p)
    if not parts:
        raise FileNotFoundError(f"no model.bin or model.bin.part1 in {', '.join(map(str, dirs))}")
    return parts


def import_ct2(
    src_dir: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    force: bool = False,
    verify: bool = True,
) -> Path:
    """Convert a CTranslate2 Whisper model into a Hugging Face directory at ``out_dir``.

    src_dir: the CTranslate2 directory (``model.bin`` or ``model.bin.part1``+``part2``,
        ``config.json``, ``tokenizer.json``, optional ``vocabulary.json`` and
        ``preprocessor_config.json``), or several directories whose files together form
        one (the packaged weights ship their parts in two packages).
    force: replace an existing ``out_dir``; otherwise an existing one is an error.
    verify: reload the result with ``from_pretrained`` and fail on missing/unexpected keys.

    The output is built in a temporary sibling directory and renamed into place, so a
    crash never leaves a half-written model behind.
    """
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    dirs = [Path(src_dir)] if isinstance(src_dir, (str, os.PathLike)) else [Path(d) for d in src_dir]
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} exists; pass force=True (CLI: --force) to replace it")
    ct2 = read_ct2(_model_source(dirs))
    if ct2.spec_name != "WhisperSpec":
        raise ValueError(f"not a Whisper model: spec {ct2.spec_name!r}")
    dims = infer_dims(ct2)
    state = map_weights(dequantize(ct2))
    ct2_config = _read_json(_find(dirs, "config.json"))
    tok_path = _find(dirs, "tokenizer.json")
    if tok_path is None:
        raise FileNotFoundError(f"tokenizer.json not found in {', '.join(map(str, dirs))}")

    with atomic_directory(out_dir) as tmp:
        special = write_tokenizer_files(tok_path, tmp, dims.vocab_size)
        config = WhisperConfig(
            vocab_size=dims.vocab_size,
            num_mel_bins=dims.n_mels,
            d_model=dims.d_model,
            encoder_layers=dims.encoder_layers,
            decoder_layers=dims.decoder_layers,
            encoder_attention_heads=dims.encoder_heads,
            decoder_attention_heads=dims.decoder_heads,
            encoder_ffn_dim=dims.encoder_ffn,
            decoder_ffn_dim=dims.decoder_ffn,
            max_source_positions=dims.max_source_positions,
            max_target_positions=dims.max_target_positions,
            pad_token_id=special.eot,
            bos_token_id=special.eot,
            eos_token_id=special.eot,
            decoder_start_token_id=special.sot,
            suppress_tokens=list(ct2_config.get("suppress_ids", [])),
            begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
            tie_word_embeddings=True,
            scale_embedding=False,
        )
        with torch.device("meta"):
            model = WhisperForConditionalGeneration(config)
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
        expected = {k for k in model.state_dict() if k not in model._tied_weights_keys}
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise KeyError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
        model.load_state_dict(tensors, strict=False, assign=True)
        model.tie_weights()
        model.generation_config = _generation_config(special, ct2_config, dims)
        model.save_pretrained(tmp)
        _write_preprocessor(dirs, tmp, dims.n_mels, WhisperFeatureExtractor)
        atomic_write_json(
            tmp / "asr_adapt_import.json",
            {"source": [str(d) for d in dirs], "format": "ctranslate2", "dims": dims.__dict__},
        )
        if verify:
            verify_hf_dir(tmp)
    log.info("imported %s -> %s (%s)", ", ".join(map(str, dirs)), out_dir, dims)
    return out_dir


def _read_json(path: Path | None) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path else {}


def _generation_config(special, ct2_config: dict, dims: WhisperDims):
    from transformers import GenerationConfig

    lang_ids = ct2_config.get("lang_ids") or list(special.lang_to_id.values())
    id_to_lang = {v: k for k, v in special.lang_to_id.items()}
    gen = GenerationConfig(
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        max_length=dims.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )
    # Whisper-specific fields are plain attributes that WhisperForConditionalGeneration.generate reads.
    gen.lang_to_id = {id_to_lang[i]: i for i in lang_ids if i in id_to_lang}
    gen.task_to_id = dict(special.task_to_id)
    gen.no_timestamps_token_id = special.no_timestamps
    gen.prev_sot_token_id = special.prev
    gen.is_multilingual = len(gen.lang_to_id) > 1
    gen.max_initial_timestamp_index = 50
    gen.return_timestamps = False
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [list(map(int, h)) for h in ct2_config["alignment_heads"]]
    return gen


def _write_preprocessor(dirs: Sequence[Path], out: Path, n_mels: int, extractor_cls) -> None:
    src = _find(dirs, "preprocessor_config.json")
    if src:
        cfg = _read_json(src)
        if int(cfg.get("feature_size", n_mels)) != n_mels:
            raise ValueError(f"{src}: feature_size {cfg.get('feature_size')} but conv1 takes {n_mels} mels")
        fe = extractor_cls(**{k: v for k, v in cfg.items() if k not in ("feature_extractor_type", "processor_class")})
    else:
        fe = extractor_cls(feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    fe.processor_class = "WhisperProcessor"
    fe.save_pretrained(out)


def verify_hf_dir(path: str | os.PathLike) -> None:
    """Load a converted directory and fail on any missing or unexpected weight."""
    from transformers import WhisperForConditionalGeneration

    _, info = WhisperForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise RuntimeError(f"{path} does not load cleanly: {bad}")

