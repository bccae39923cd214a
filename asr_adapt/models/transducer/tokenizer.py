"""Output tokenizers for the transducer, behind a registry: ``sentencepiece`` and ``char``.

Both reserve id 0 for the transducer blank (never produced by :meth:`encode`) and id 1
for unknown input. A model directory holds ``tokenizer_config.json`` (``{"kind": ...}``)
plus the kind's own files, so :func:`load_tokenizer` needs only the directory.

* ``sentencepiece``: one multilingual unigram/BPE model trained on every locale's text,
  ``character_coverage=1.0`` (tail-language scripts keep their rare characters) and
  ``byte_fallback=True`` (characters never seen still encode, as UTF-8 bytes, instead of
  collapsing to ``<unk>``).
* ``char``: one token per character seen in training; a fallback for tiny models/tests.
"""

from __future__ import annotations

import abc
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from asr_adapt.fileio import atomic_write, atomic_write_json
from asr_adapt.registry import Registry

BLANK, UNK = "<blk>", "<unk>"
CONFIG_FILE = "tokenizer_config.json"


class Tokenizer(abc.ABC):
    """Text <-> token ids; ``blank_id == 0``."""

    kind: str = ""
    blank_id: int = 0

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def pieces(self) -> list[str]:
        """The token of every id, in id order: what an LM counted over these ids must match."""

    @abc.abstractmethod
    def _save(self, directory: Path) -> None: ...

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path) -> Tokenizer: ...

    @classmethod
    @abc.abstractmethod
    def train(cls, texts: Iterable[str], **options) -> Tokenizer: ...

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save(directory)
        atomic_write_json(directory / CONFIG_FILE, {"kind": self.kind, "vocab_size": self.vocab_size})


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")


@TOKENIZERS.decorator("char")
class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, symbols: Sequence[str]) -> None:
        if list(symbols[:2]) != [BLANK, UNK]:
            raise ValueError(f"char vocabulary must start with {BLANK!r}, {UNK!r}")
        self.symbols = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(ch, 1) for ch in unicodedata.normalize("NFC", text)]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i > 1)

    def pieces(self) -> list[str]:
        return list(self.symbols)

    def _save(self, directory: Path) -> None:
        atomic_write_json(directory / "chars.json", self.symbols)

    @classmethod
    def load(cls, directory: Path) -> CharTokenizer:
        return cls(json.loads((Path(directory) / "chars.json").read_text(encoding="utf-8")))

    @classmethod
    def train(cls, texts: Iterable[str], **options) -> CharTokenizer:
        chars = sorted({ch for t in texts for ch in unicodedata.normalize("NFC", t)})
        return cls([BLANK, UNK, *chars])


@TOKENIZERS.decorator("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.piece_to_id(BLANK) != 0:
            raise ValueError(f"sentencepiece model must have {BLANK!r} as id 0 (the transducer blank)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if i != 0])

    def pieces(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]

    def _save(self, directory: Path) -> None:
        atomic_write(directory / "tokenizer.model", self.proto)

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        return cls((Path(directory) / "tokenizer.model").read_bytes())

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 500, model_type: str = "unigram", **options
    ) -> SentencePieceTokenizer:
        """Train on ``texts`` (one sentence each). ``vocab_size`` is an upper bound: small
        corpora get fewer pieces (``hard_vocab_limit=False``) rather than an error.
        Byte fallback adds 256 byte pieces, so ``vocab_size`` should exceed ~300."""
        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("no text to train the tokenizer on")
        with tempfile.TemporaryDirectory() as tmp:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_prefix=os.path.join(tmp, "spm"),
                vocab_size=vocab_size, model_type=model_type, character_coverage=1.0,
                byte_fallback=True, hard_vocab_limit=False,
                pad_id=0, pad_piece=BLANK, unk_id=1, unk_piece=UNK, bos_id=-1, eos_id=-1,
                minloglevel=2, **options,
            )
            return cls(Path(tmp, "spm.model").read_bytes())


def train_tokenizer(kind: str, texts: Iterable[str], **options) -> Tokenizer:
    return TOKENIZERS.get(kind).train(texts, **options)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    directory = Path(directory)
    cfg = directory / CONFIG_FILE
    if not cfg.exists():
        raise FileNotFoundError(f"{cfg}: no tokenizer here (train one with `asr-adapt tokenizer train`)")
    return TOKENIZERS.get(json.loads(cfg.read_text(encoding="utf-8"))["kind"]).load(directory)


def read_kaldi_text(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Transcripts from Kaldi ``text`` files (``<utt-id> <transcript>`` per line)."""
    out: list[str] = []
    for p in paths:
        before = len(out)
        with open(p, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(maxsplit=1)
                if len(parts) == 2:  # an utterance with an empty transcript has nothing to learn
                    out.append(parts[1].strip())
        if len(out) == before:
            raise ValueError(f"{p}: no transcripts found")
    return out
