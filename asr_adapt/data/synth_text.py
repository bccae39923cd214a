"""Dictation-style sentences for the synthetic corpus, from Faker, normalised to speakable text.

Text kinds (registered in :data:`TEXT_KINDS`): a sentence of native-script words, a
person's name with a city, a street address with a city. Faker mixes Latin filler
("Mission", "bury") and digits into some locales' addresses, so text is normalised to:

* lower case (``str.lower``), punctuation removed, hyphens turned into spaces;
* in names and addresses, abbreviations (tokens ending in ``.``: ``ул.``, ``д.``, ``MBA.``)
  dropped, since espeak-ng spells some out letter by letter and expands others;
* only tokens written entirely in the locale's script (word-internal apostrophes, Unicode
  marks such as Arabic harakat, and the Persian zero-width non-joiner allowed);
* **no digits**: tokens containing digits are dropped. espeak-ng reads numbers in each
  language's own way (years, house ranges "1-8", "066-907") and a transcript "66" can be
  spoken several ways, which would make WER measure number formatting, not recognition.

If a kind yields fewer than :data:`MIN_WORDS` tokens after that, a sentence is used instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from asr_adapt.data.locales import LocaleSpec
from asr_adapt.registry import Registry

MIN_WORDS = 3
_ZWNJ = "\u200c"
_APOSTROPHES = "'\u2019\u05f3"  # ASCII, right single quote, Hebrew geresh

TextKind = Callable[["object", "object"], str]  # (faker, random.Random) -> raw text
TEXT_KINDS: Registry[TextKind] = Registry("text kind")


@TEXT_KINDS.decorator("sentence")
def _sentence(fake, rng) -> str:
    return fake.sentence(nb_words=rng.randint(4, 8), variable_nb_words=False)


@TEXT_KINDS.decorator("name")
def _name(fake, rng) -> str:
    return f"{fake.name()} {fake.city()}"


@TEXT_KINDS.decorator("address")
def _address(fake, rng) -> str:
    return f"{fake.street_address()} {fake.city()}"


def normalise(text: str, spec: LocaleSpec, drop_abbreviations: bool = False) -> str:
    """Speakable, script-pure transcript (see the module docstring for the rules)."""
    text = unicodedata.normalize("NFC", text).lower()
    words = []
    for raw in text.replace("-", " ").replace("\u2010", " ").split():
        if any(ch.isdigit() for ch in raw) or (drop_abbreviations and raw.endswith(".")):
            continue
        # Drop punctuation, keep letters, marks, word-internal apostrophes and the ZWNJ.
        kept = "".join(ch for ch in raw if ch.isalpha() or unicodedata.category(ch).startswith("M")
                       or ch in _APOSTROPHES or ch == _ZWNJ)
        kept = kept.strip(_APOSTROPHES + _ZWNJ)
        if not kept:
            continue
        letters = [ch for ch in kept if ch.isalpha()]
        if letters and all(spec.in_script(ch) for ch in letters):
            words.append(kept)
    return " ".join(words)


def make_text(fake, rng, spec: LocaleSpec, kinds: dict[str, float]) -> tuple[str, str]:
    """One utterance's transcript and the kind that produced it.

    ``fake`` must be seeded by the caller and ``rng`` is a ``random.Random``: the result is a
    pure function of both seeds. ``kinds``: text kind -> relative weight.
    """
    names = sorted(kinds)
    kind = rng.choices(names, weights=[kinds[n] for n in names])[0]
    text = normalise(TEXT_KINDS.get(kind)(fake, rng), spec, drop_abbreviations=kind != "sentence")
    tries = 0
    while len(text.split()) < MIN_WORDS:
        kind = "sentence"
        text = normalise(TEXT_KINDS.get(kind)(fake, rng), spec)
        tries += 1
        if tries > 20:
            raise RuntimeError(f"{spec.tag}: Faker locale {spec.faker} gives no {spec.script}-script words")
    return text, kind
