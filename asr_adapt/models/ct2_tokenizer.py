"""Tokenizer files for an imported Whisper model, and the special-token ids they define.

CTranslate2 / faster-whisper directories ship one Hugging Face ``tokenizer.json``. The
Hugging Face Whisper tokenizer also reads ``tokenizer_config.json`` (class, special
tokens) and, for its slow path, ``vocab.json`` + ``merges.txt``; all of them are derived
from ``tokenizer.json`` here so ``WhisperTokenizer(Fast).from_pretrained`` works offline.
Special-token ids are looked up by their text, never hard-coded, because English-only
and multilingual (and large-v3) vocabularies place them differently.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from asr_adapt.fileio import atomic_write, atomic_write_json

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
PREV = "<|startofprev|>"
TASKS = ("transcribe", "translate")
# A language token is <|xx|> or <|haw|> / <|yue|>: 2-3 lowercase letters.
_LANG_TOKEN = re.compile(r"<\|[a-z]{2,3}\|>$")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's control tokens in one vocabulary.

    lang_to_id: ``"<|de|>"`` -> id, in vocabulary order (the order of Whisper's language head).
    task_to_id: ``"transcribe"``/``"translate"`` -> id.
    """

    eot: int
    sot: int
    no_timestamps: int
    prev: int | None
    lang_to_id: dict[str, int] = field(default_factory=dict)
    task_to_id: dict[str, int] = field(default_factory=dict)


def special_tokens(tokenizer_json: dict) -> SpecialTokens:
    """Read the control-token ids from a parsed ``tokenizer.json``."""
    added = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    vocab = tokenizer_json.get("model", {}).get("vocab", {})

    def tid(tok: str, required: bool = True) -> int | None:
        if tok in added:
            return added[tok]
        if tok in vocab:
            return vocab[tok]
        if required:
            raise KeyError(f"tokenizer.json has no {tok!r}; not a Whisper tokenizer")
        return None

    langs = sorted(((i, t) for t, i in added.items() if _LANG_TOKEN.match(t)), key=lambda x: x[0])
    return SpecialTokens(
        eot=tid(EOT),
        sot=tid(SOT),
        no_timestamps=tid(NO_TIMESTAMPS),
        prev=tid(PREV, required=False),
        lang_to_id={t: i for i, t in langs},
        task_to_id={task: tid(f"<|{task}|>") for task in TASKS if tid(f"<|{task}|>", required=False) is not None},
    )


def write_tokenizer_files(tokenizer_json_path: Path, out_dir: Path, vocab_size: int) -> SpecialTokens:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json and
    merges.txt into ``out_dir``; return the special-token ids.

    ``vocab_size`` (rows of the embedding) must cover every token id the tokenizer can emit.
    """
    data = json.loads(Path(tokenizer_json_path).read_text(encoding="utf-8"))
    special = special_tokens(data)
    max_id = max([t["id"] for t in data.get("added_tokens", [])] + list(data["model"]["vocab"].values()))
    if max_id >= vocab_size:
        raise ValueError(f"tokenizer has id {max_id} but the model's vocabulary has {vocab_size} rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json_path, out_dir / "tokenizer.json")
    atomic_write_json(out_dir / "vocab.json", data["model"]["vocab"])
    merges = data["model"].get("merges", [])
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    atomic_write(out_dir / "merges.txt", "#version: 0.2\n" + "".join(line + "\n" for line in lines))
    tokens = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
    atomic_write_json(out_dir / "special_tokens_map.json", tokens)
    atomic_write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "WhisperTokenizer",
            "processor_class": "WhisperProcessor",
            "model_max_length": 1024,
            "add_prefix_space": False,
            "errors": "replace",
            **tokens,
        },
    )
    return special
