"""Text normalisers applied to both references and hypotheses before scoring.

Every normaliser is registered by name in :data:`NORMALISERS` (a registry of factories, so
that heavy ones are only built when asked for) and every report names the one it used.

- ``multilingual`` (default): script-agnostic clean-up that never splits a word made of a
  base letter plus combining marks (Devanagari matras, Thai vowels and tone marks, Arabic
  harakat, Hebrew points).
- ``whisper-english``: Whisper's English normaliser (contractions, spellings, numbers).
- ``none``: identity, for scoring text that is already normalised.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from asr_adapt.registry import Registry


@dataclass(frozen=True)
class Normaliser:
    """A named ``str -> str`` function; ``description`` says which implementation ran."""

    name: str
    fn: Callable[[str], str]
    description: str = ""

    def __call__(self, text: str) -> str:
        return self.fn(text)


NORMALISERS: Registry[Callable[[], Normaliser]] = Registry("normaliser")


def get_normaliser(name: str) -> Normaliser:
    """Build the normaliser registered under ``name`` (unknown names list the known ones)."""
    return NORMALISERS.get(name)()


# --- multilingual -----------------------------------------------------------------------

# Non-speech annotations such as ``[noise]`` or ``<unk>`` are not words anyone said.
_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>")
# Apostrophe-like marks inside words are deleted rather than turned into a space, so that
# "don't" == "dont" and Hebrew acronyms with geresh/gershayim stay one word.
_JOINERS = frozenset("'\u2019\u2018\u0060\u00b4\u05f3\u05f4")
# Invisible bidi controls and the BOM come and go with copy-paste of right-to-left text;
# they carry no content. ZWJ/ZWNJ (U+200C/U+200D) are kept: Persian and Indic words use them.
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\u061c")


class _CharTable(dict):
    """``str.translate`` table filled on first sight of each character (a per-character
    ``unicodedata`` lookup in Python would dominate the time of scoring large sets)."""

    def __missing__(self, code: int) -> str:
        out = self[code] = _multilingual_char(chr(code))
        return out


_TABLE = _CharTable()


def _multilingual_char(ch: str) -> str:
    if ch in _JOINERS or ch in _INVISIBLE:
        return ""
    cat = unicodedata.category(ch)
    # P* punctuation and S* symbols (math, currency, emoji, standalone modifiers) separate
    # words. M* combining marks fall through and are kept attached to their base letter.
    if cat[0] in "PS" or cat in ("Zs", "Zl", "Zp", "Cc"):
        return " "
    return ch


def multilingual_normalise(text: str) -> str:
    """NFKC, lower-case, drop ``[..]``/``<..>`` annotations, punctuation and symbols to
    spaces (apostrophes deleted), keep combining marks, collapse whitespace.

    >>> multilingual_normalise("Hello,  World! [noise] don't")
    'hello world dont'
    >>> multilingual_normalise("नमस्ते दुनिया।")  # virama and matras stay in the word
    'नमस्ते दुनिया'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _ANNOTATION.sub(" ", text)
    return " ".join(text.translate(_TABLE).split())


NORMALISERS.register(
    "multilingual",
    lambda: Normaliser(
        "multilingual",
        multilingual_normalise,
        "NFKC, lower-case, [..]/<..> removed, P*/S* -> space, apostrophes deleted, M* kept",
    ),
)
NORMALISERS.register("none", lambda: Normaliser("none", lambda t: " ".join(t.split()), "whitespace only"))


# --- whisper-english ----------------------------------------------------------------------

# British -> American spellings of common words. Whisper's full mapping (english.json,
# ~1700 entries) ships with the openai-whisper package only; it is used when installed.
_SPELLINGS = {
    "colour": "color", "colours": "colors", "favourite": "favorite", "favour": "favor",
    "honour": "honor", "labour": "labor", "neighbour": "neighbor", "neighbours": "neighbors",
    "behaviour": "behavior", "flavour": "flavor", "humour": "humor", "harbour": "harbor",
    "centre": "center", "centres": "centers", "metre": "meter", "metres": "meters",
    "litre": "liter", "litres": "liters", "theatre": "theater", "fibre": "fiber",
    "organise": "organize", "organised": "organized", "realise": "realize", "realised": "realized",
    "recognise": "recognize", "recognised": "recognized", "apologise": "apologize",
    "analyse": "analyze", "analysed": "analyzed", "travelled": "traveled", "travelling": "traveling",
    "cancelled": "canceled", "programme": "program", "programmes": "programs", "grey": "gray",
    "defence": "defense", "licence": "license", "catalogue": "catalog", "dialogue": "dialog",
    "cheque": "check", "tyre": "tire", "tyres": "tires", "jewellery": "jewelry", "mum": "mom",
    "okay": "ok", "alright": "all right",
}


def _whisper_spelling_map() -> tuple[dict[str, str], str]:
    try:
        import json
        from importlib import resources

        path = resources.files("whisper") / "normalizers" / "english.json"
        return json.loads(path.read_text(encoding="utf-8")), "openai-whisper english.json"
    except Exception:  # package absent or laid out differently: use the built-in essentials
        return dict(_SPELLINGS), f"built-in spelling map ({len(_SPELLINGS)} entries)"


_CONTRACTIONS = [
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"),
    (r"\bain't\b", "aint"), (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"),
    (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"), (r"\bi'ma\b", "i am going to"),
    (r"\bmr\.?\s", "mister "), (r"\bmrs\.?\s", "missus "), (r"\bdr\.?\s", "doctor "),
    (r"\bst\.?\s", "saint "), (r"\bprof\.?\s", "professor "),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'s\b", " is"), (r"'d\b", " would"),
    (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'m\b", " am"),
]
_FILLERS = re.compile(r"\b(hmm|mm|mhm|mmm|uh|um)\b")


def _basic_english(text: str, spellings: dict[str, str]) -> str:
    """The essentials of Whisper's English normaliser, for when transformers is absent.

    Lower-case, remove ``[..]``/``(..)`` and fillers, expand common contractions and
    titles, standardise spellings, punctuation to spaces. Spoken numbers are left as
    words (Whisper's number standardiser is not reimplemented here).
    """
    text = text.lower()
    text = re.sub(r"[<\[][^>\]]*[>\]]", "", text)
    text = re.sub(r"\(([^)]+?)\)", "", text)
    text = _FILLERS.sub("", text)
    text = text.replace("\u2019", "'")
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"(\d),(\d)", r"\1\2", text)  # 1,000 -> 1000
    text = re.sub(r"\.([^0-9]|$)", r" \1", text)  # keep decimal points only
    text = "".join(" " if unicodedata.category(c)[0] in "PS" and c != "." else c for c in text)
    words = [spellings.get(w, w) for w in text.split()]
    return " ".join(words)


def _whisper_english() -> Normaliser:
    spellings, source = _whisper_spelling_map()
    try:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    except Exception:  # transformers missing or broken in this environment
        return Normaliser(
            "whisper-english",
            lambda t: _basic_english(t, spellings),
            f"built-in essentials of Whisper's English normaliser; {source}",
        )
    impl = EnglishTextNormalizer(spellings)
    return Normaliser("whisper-english", impl, f"transformers EnglishTextNormalizer; {source}")


NORMALISERS.register("whisper-english", _whisper_english)
