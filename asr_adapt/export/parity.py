"""Do stock runtimes, called the way their users call them, transcribe an export like asr-adapt?

Each runtime gets the audio and the language, plus only the arguments the README documents
for it; the token suppression, the search and the token cap come from the export's own
configs (:mod:`asr_adapt.export.decoding`). That is the point: an export that needs
asr-adapt's settings passed in by hand does not decode like asr-adapt for its users.
asr-adapt decodes as stock Whisper does (:func:`parity_options`: audio padded to 30 s, no
repetition guard or fallback); the language is forced, so language id plays no part.

Runtimes (:data:`RUNTIMES`):

* ``hf`` - ``transformers.pipeline("automatic-speech-recognition")`` on the ``hf`` export,
  given ``language`` and ``max_new_tokens``;
* ``ct2`` - the CTranslate2 engine (``ctranslate2.models.Whisper.generate``) on the ``ct2``
  export, given stock features (audio padded to 30 s), the prompt and ``beam_size=1`` (its
  default is 5): the exactness check of the CTranslate2 model and its ``config.json``;
* ``faster-whisper`` - ``WhisperModel.transcribe`` with ``language`` and the arguments of
  :func:`faster_whisper_args`. It pads the *log-mel* with zeros instead of padding the audio,
  so its encoder sees different input from stock Whisper's and uncertain tokens may flip: a
  user-level agreement figure, not an exactness check (audio padded to 30 s agrees exactly).

The CTranslate2 runtimes are not given a token cap: they stop at 224 new tokens by default
(their ``max_length=448`` halved), and faster-whisper's ``max_new_tokens`` would be halved too.
A row where asr-adapt stopped at ``max_new_tokens`` agrees when the runtime's tokens continue it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.registry import Registry

# faster-whisper's transcribe defaults that differ from asr-adapt's decode, and the values
# that reproduce it (README "Exported models"): greedy search (default 5 beams), no sampling
# fallback (default temperatures 0.0-1.0), no timestamps (asr-adapt's prompt ends with
# <|notimestamps|>), and no window dropped as silence (asr-adapt transcribes every window).
FASTER_WHISPER_ARGS = {"beam_size": 1, "temperature": 0.0, "without_timestamps": True, "no_speech_threshold": None}
# New tokens the CTranslate2 engine (and so faster-whisper) allows by default: half of its
# default max_length=448, as openai/whisper's sample_len.
CT2_DEFAULT_CAP = 224


@dataclass(frozen=True)
class RuntimeDecode:
    """One clip decoded by a stock runtime; tokens are ``None`` where the runtime gives text only."""

    text: str
    tokens: list[int] | None = None


@dataclass(frozen=True)
class Runtime:
    """A stock runtime: the export format it loads, ``decode(model_dir, wavs, language,
    max_new_tokens)``, and whether it sees stock Whisper's input (then it must agree exactly)."""

    fmt: str
    decode: Callable[..., list[RuntimeDecode]]
    exact: bool = True


RUNTIMES: Registry[Runtime] = Registry("export runtime")


def parity_options(max_new_tokens: int = 128, language: str | None = None) -> DecodingOptions:
    """asr-adapt options that decode like stock Whisper runtimes (greedy, 30 s window, no loop handling)."""
    return DecodingOptions(
        language=language, context="full", fallback="none", repetition_guard=False,
        compression_ratio_threshold=None, max_new_tokens=max_new_tokens,
        # The stock runtimes cap by a token count only, not by audio duration.
        tokens_per_second=1e6,
    )


def whisper_code(backbone, locale: str) -> str:
    """Whisper language code (``"el"``) that asr-adapt uses for ``locale`` (aliases applied)."""
    tok = backbone.lang_token(locale)
    return next(code for code, i in backbone.tokens.lang_to_id.items() if i == tok)


def pipeline_decode(model_dir, wavs, language, max_new_tokens) -> list[RuntimeDecode]:
    """``transformers.pipeline("automatic-speech-recognition")`` on the exported directory."""
    from transformers import pipeline

    pipe = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    kw = {"language": language, "max_new_tokens": max_new_tokens}
    return [RuntimeDecode(pipe(np.array(w, dtype=np.float32), generate_kwargs=kw)["text"].strip()) for w in wavs]


def _faster_whisper(model_dir):
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=1)


def ct2_engine_decode(model_dir, wavs, language, max_new_tokens) -> list[RuntimeDecode]:
    """The CTranslate2 engine that ``faster_whisper.WhisperModel`` loaded, on faster-whisper's
    own log-mel of the audio padded to 30 s (stock Whisper's input), suppression from config.json."""
    import ctranslate2

    fw = _faster_whisper(model_dir)
    tok = fw.hf_tokenizer
    prompt = [tok.token_to_id(t) for t in ("<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>", "<|notimestamps|>")]
    n_frames = fw.feature_extractor.nb_max_frames
    out = []
    for w in wavs:
        w = np.asarray(w, dtype=np.float32)
        feats = fw.feature_extractor(w, padding=fw.feature_extractor.n_samples)[:, :n_frames]
        res = fw.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32)), [prompt], beam_size=1,
        )[0]
        ids = list(res.sequences_ids[0])
        out.append(RuntimeDecode(tok.decode(ids).strip(), ids))
    return out


def faster_whisper_args(model_dir) -> dict:
    """``transcribe`` arguments that make faster-whisper decode an export like asr-adapt:
    :data:`FASTER_WHISPER_ARGS` plus the export's suppression list. faster-whisper puts its own
    non-speech list in place of ``config.json``'s ``suppress_ids`` unless given ``suppress_tokens``
    (for OpenAI bases the two differ only in control tokens a Whisper rarely emits in text)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return {**FASTER_WHISPER_ARGS, "suppress_tokens": list(config["suppress_ids"])}


def faster_whisper_decode(model_dir, wavs, language, max_new_tokens) -> list[RuntimeDecode]:
    """``faster_whisper.WhisperModel(dir, compute_type="float32").transcribe(audio, language, **faster_whisper_args(dir))``."""
    model = _faster_whisper(model_dir)
    out = []
    for w in wavs:
        # Fresh arguments per call: transcribe extends the suppress_tokens list it is given.
        segs, _ = model.transcribe(np.asarray(w, dtype=np.float32), language=language, **faster_whisper_args(model_dir))
        segs = list(segs)  # a generator: decoding happens here
        out.append(RuntimeDecode(" ".join(s.text.strip() for s in segs).strip(), [t for s in segs for t in s.tokens]))
    return out


RUNTIMES.register("hf", Runtime("hf", pipeline_decode))
RUNTIMES.register("ct2", Runtime("ct2", ct2_engine_decode))
RUNTIMES.register("faster-whisper", Runtime("ct2", faster_whisper_decode, exact=False))


@dataclass(frozen=True)
class Ours:
    """asr-adapt's decode of one clip; ``capped``: it stopped at its token cap, not at end-of-text."""

    text: str
    tokens: list[int]
    capped: bool = False


def _row(uid: str, ours: Ours, theirs: RuntimeDecode) -> dict:
    """Compare one clip. ``first_flip``: first token position where the two differ (``None``: no
    difference); ``agree``: equal, or asr-adapt was capped and the runtime's output continues it."""
    flip = None
    if theirs.tokens is not None:
        flip = next((i for i, (a, b) in enumerate(zip(ours.tokens, theirs.tokens)) if a != b), None)
        if flip is None and len(ours.tokens) != len(theirs.tokens):
            flip = min(len(ours.tokens), len(theirs.tokens))
        continues = theirs.tokens[: len(ours.tokens)] == ours.tokens
    else:
        continues = theirs.text.startswith(ours.text)
    text_equal = ours.text == theirs.text
    return {"id": uid, "text_equal": text_equal, "tokens_equal": None if theirs.tokens is None else flip is None,
            "first_flip": flip, "agree": text_equal or (ours.capped and continues), "ours": ours.text, "theirs": theirs.text}


@dataclass
class ParityReport:
    """Per-clip comparison of asr-adapt's decode with a stock runtime's (rows: see :func:`_row`)."""

    runtime: str
    ids: list[str]
    ours: list[Ours]
    theirs: list[RuntimeDecode]
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [_row(uid, o, t) for uid, o, t in zip(self.ids, self.ours, self.theirs)]

    @property
    def n_agree(self) -> int:
        return sum(r["agree"] for r in self.rows)

    def summary(self) -> str:
        s = f"{self.runtime}: {self.n_agree}/{len(self.rows)} transcripts equal"
        if capped := sum(r["agree"] and not r["text_equal"] for r in self.rows):
            s += f" ({capped} up to asr-adapt's token cap, where the runtime went on)"
        return s


def decode_merged(backbone, wavs: Sequence[np.ndarray], locale: str, options: DecodingOptions):
    """asr-adapt's decode of ``wavs`` with the model merged for ``locale``: every row is routed to
    ``locale``, whose adapter is in the weights (routing a row elsewhere would be an error)."""
    from asr_adapt.decoding.decoders import transcribe_batch

    return transcribe_batch(backbone, list(wavs), [locale] * len(wavs), options, route=[locale] * len(wavs))


def check_parity(backbone, model_dir: str | Path, runtime: str, wavs: Sequence[np.ndarray], locale: str,
                 ids: Sequence[str] | None = None, max_new_tokens: int = 128) -> ParityReport:
    """Decode ``wavs`` with ``backbone`` (the merged model) and with ``runtime`` on ``model_dir``
    (an export in that runtime's format, see :data:`RUNTIMES`)."""
    if not 1 <= max_new_tokens <= CT2_DEFAULT_CAP:
        raise ValueError(f"max_new_tokens must be in [1, {CT2_DEFAULT_CAP}] (the stock runtimes' default cap), "
                         f"got {max_new_tokens}")
    hyps = decode_merged(backbone, wavs, locale, parity_options(max_new_tokens, language=locale))
    theirs = RUNTIMES.get(runtime).decode(model_dir, wavs, whisper_code(backbone, locale), max_new_tokens)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(wavs))]
    ours = [Ours(h.text, list(h.tokens), h.truncated) for h in hyps]
    return ParityReport(runtime, ids, ours, theirs)
