"""Do stock runtimes transcribe an export exactly like asr-adapt does?

Greedy decoding of the exported directory in the runtimes users load it with is compared
with asr-adapt's own decode of the same merged model. To compare like with like, asr-adapt
decodes as stock Whisper does (:func:`parity_options`: audio padded to 30 s, no repetition
guard or fallback) and the runtimes get asr-adapt's exact token suppression
(:func:`suppressed_ids`); the language is forced, so language id plays no part.

Runtimes (:data:`RUNTIMES`):

* ``hf`` - ``transformers.pipeline("automatic-speech-recognition")`` on the ``hf`` export;
* ``ct2`` - the CTranslate2 engine of ``faster_whisper.WhisperModel`` on the ``ct2`` export,
  fed stock features (audio padded to 30 s): this is the exactness check;
* ``faster-whisper`` - ``WhisperModel.transcribe`` itself. It pads the *log-mel* with zeros
  instead of padding the audio, so its encoder input differs from stock Whisper's and
  uncertain tokens may flip: a user-level agreement figure, not an exactness check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_adapt.registry import Registry


@dataclass(frozen=True)
class RuntimeDecode:
    """One clip decoded by a stock runtime; tokens are ``None`` where the runtime gives text only."""

    text: str
    tokens: list[int] | None = None


@dataclass(frozen=True)
class Runtime:
    """A stock runtime: the export format it loads, ``decode(model_dir, wavs, language, suppress,
    max_new_tokens)``, and whether it sees stock Whisper's input (then it must agree exactly)."""

    fmt: str
    decode: Callable[..., list[RuntimeDecode]]
    exact: bool = True


RUNTIMES: Registry[Runtime] = Registry("export runtime")


def parity_options(backbone, max_new_tokens: int = 128, language: str | None = None):
    """asr-adapt options that decode like stock Whisper runtimes (greedy, 30 s window, no loop handling)."""
    return backbone.decoding_options(
        language=language, context="full", fallback="none", repetition_guard=False,
        compression_ratio_threshold=None, max_new_tokens=max_new_tokens,
        # The stock runtimes cap by a token count only, not by audio duration.
        tokens_per_second=1e6,
    )


def suppressed_ids(backbone, options) -> list[int]:
    """Token ids asr-adapt never emits under ``options`` (what its logit mask removes at every step)."""
    ids = set(backbone.suppress_tokens if options.suppress_tokens is None else options.suppress_tokens)
    if options.suppress_special:
        ids.update(range(backbone.tokens.eot + 1, backbone.proj_out.out_features))
    return sorted(ids)


def whisper_code(backbone, locale: str) -> str:
    """Whisper language code (``"el"``) that asr-adapt uses for ``locale`` (aliases applied)."""
    tok = backbone.lang_token(locale)
    return next(code for code, i in backbone.tokens.lang_to_id.items() if i == tok)


def pipeline_decode(model_dir, wavs, language, suppress, max_new_tokens) -> list[RuntimeDecode]:
    """``transformers.pipeline("automatic-speech-recognition")`` on the exported directory."""
    from transformers import pipeline

    pipe = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    kw = {"language": language, "task": "transcribe", "num_beams": 1, "do_sample": False,
          "max_new_tokens": max_new_tokens, "suppress_tokens": list(suppress)}
    return [RuntimeDecode(pipe(np.array(w, dtype=np.float32), generate_kwargs=kw)["text"].strip()) for w in wavs]


def _faster_whisper(model_dir):
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=1)


def ct2_engine_decode(model_dir, wavs, language, suppress, max_new_tokens) -> list[RuntimeDecode]:
    """Greedy decode with the CTranslate2 engine that ``faster_whisper.WhisperModel`` loaded,
    on faster-whisper's own log-mel of the audio padded to 30 s (stock Whisper's input)."""
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
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32)), [prompt],
            beam_size=1, max_length=min(448, len(prompt) + max_new_tokens), suppress_blank=True,
            suppress_tokens=list(suppress),
        )[0]
        ids = [t for t in res.sequences_ids[0] if t < tok.token_to_id("<|endoftext|>")]
        out.append(RuntimeDecode(tok.decode(ids).strip(), ids))
    return out


def faster_whisper_decode(model_dir, wavs, language, suppress, max_new_tokens) -> list[RuntimeDecode]:
    """``faster_whisper.WhisperModel(dir, compute_type="float32").transcribe``: greedy, no timestamps."""
    model = _faster_whisper(model_dir)
    out = []
    for w in wavs:
        segs, _ = model.transcribe(
            np.asarray(w, dtype=np.float32), language=language, task="transcribe", beam_size=1, best_of=1,
            temperature=0.0, without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            suppress_blank=True, suppress_tokens=list(suppress), max_new_tokens=max_new_tokens,
        )
        segs = list(segs)  # a generator: decoding happens here
        out.append(RuntimeDecode(" ".join(s.text.strip() for s in segs).strip(), [t for s in segs for t in s.tokens]))
    return out


RUNTIMES.register("hf", Runtime("hf", pipeline_decode))
RUNTIMES.register("ct2", Runtime("ct2", ct2_engine_decode))
RUNTIMES.register("faster-whisper", Runtime("ct2", faster_whisper_decode, exact=False))


@dataclass
class ParityReport:
    """Per-clip comparison of asr-adapt's decode with a stock runtime's.

    A row's ``first_flip`` is the first token position where the two differ (``None``: equal);
    ``capped`` marks a runtime sequence that is a strict prefix of asr-adapt's (the runtime's
    token cap cut it; CTranslate2 counts its cap differently).
    """

    runtime: str
    ids: list[str]
    ours: list[tuple[str, list[int]]]
    theirs: list[RuntimeDecode]
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for uid, (text, toks), r in zip(self.ids, self.ours, self.theirs):
            flip, capped = None, False
            if r.tokens is not None and r.tokens != toks:
                flip = next((i for i, (a, b) in enumerate(zip(toks, r.tokens)) if a != b), None)
                capped = flip is None and len(r.tokens) < len(toks)
                if flip is None and not capped:
                    flip = len(toks)
            self.rows.append({"id": uid, "text_equal": text == r.text, "tokens_equal": None if r.tokens is None else flip is None,
                              "first_flip": flip, "capped": capped, "ours": text, "theirs": r.text})

    @property
    def n_text_equal(self) -> int:
        return sum(r["text_equal"] for r in self.rows)

    def summary(self) -> str:
        tok = [r["tokens_equal"] for r in self.rows if r["tokens_equal"] is not None]
        s = f"{self.runtime}: {self.n_text_equal}/{len(self.rows)} transcripts equal"
        return s + (f", {sum(tok)}/{len(tok)} token sequences equal" if tok else "")


def check_parity(backbone, model_dir: str | Path, runtime: str, wavs: Sequence[np.ndarray], locale: str,
                 ids: Sequence[str] | None = None, max_new_tokens: int = 128) -> ParityReport:
    """Decode ``wavs`` with ``backbone`` (the merged model) and with ``runtime`` on ``model_dir``
    (an export in that runtime's format, see :data:`RUNTIMES`)."""
    opts = parity_options(backbone, max_new_tokens, language=locale)
    hyps = backbone.transcribe_batch(list(wavs), [locale] * len(wavs), opts)
    theirs = RUNTIMES.get(runtime).decode(model_dir, wavs, whisper_code(backbone, locale), suppressed_ids(backbone, opts), max_new_tokens)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(wavs))]
    return ParityReport(runtime, ids, [(h.text, list(h.tokens)) for h in hyps], theirs)
