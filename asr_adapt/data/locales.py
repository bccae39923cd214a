"""Locale specs for the synthetic dictation corpus: text source, voice, script, role.

Each spec ties a BCP-47 tag to the Faker locale that supplies native-script words, names
and addresses, and to the espeak-ng voice that speaks them. ``role`` marks head locales
(plenty of training data) and tail locales (scarce), which is the imbalance the
toolkit's adapters are for. Adding a locale is one ``register`` call.

Chosen after checking this machine's ``espeak-ng --voices`` and each Faker locale's output:
``ar_EG`` and ``bg_BG`` fall back to Latin filler words in Faker, so Egyptian Arabic uses
``ar_AA`` (Modern Standard Arabic word lists) and Bulgarian is left out.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from asr_adapt.registry import Registry

SCRIPTS = ("Latin", "Greek", "Cyrillic", "Arabic", "Hebrew", "Armenian")
ROLES = ("head", "tail")


@dataclass(frozen=True)
class LocaleSpec:
    """How one locale's synthetic speech is made."""

    tag: str = field(metadata={"help": "BCP-47 locale tag, e.g. el-GR"})
    faker: str = field(metadata={"help": "Faker locale with native-script word lists, e.g. el_GR"})
    voice: str = field(metadata={"help": "espeak-ng voice, e.g. el (variants are appended as +m3)"})
    script: str = field(metadata={"help": f"writing system, one of {', '.join(SCRIPTS)}"})
    role: str = field(metadata={"help": "head (plenty of data) or tail (scarce)"})

    def __post_init__(self) -> None:
        if self.script not in SCRIPTS:
            raise ValueError(f"{self.tag}: unknown script {self.script!r}; known: {', '.join(SCRIPTS)}")
        if self.role not in ROLES:
            raise ValueError(f"{self.tag}: role must be one of {ROLES}, got {self.role!r}")

    def in_script(self, ch: str) -> bool:
        """Whether a letter belongs to this locale's script (by its Unicode name)."""
        try:
            return unicodedata.name(ch).startswith(self.script.upper() + " ")
        except ValueError:  # unnamed code point
            return False


LOCALES: Registry[LocaleSpec] = Registry("locale")

for _spec in (
    # head locales
    LocaleSpec("en-US", "en_US", "en-us", "Latin", "head"),
    LocaleSpec("de-DE", "de_DE", "de", "Latin", "head"),
    LocaleSpec("fr-FR", "fr_FR", "fr-fr", "Latin", "head"),
    LocaleSpec("es-ES", "es_ES", "es", "Latin", "head"),
    LocaleSpec("it-IT", "it_IT", "it", "Latin", "head"),
    LocaleSpec("nl-NL", "nl_NL", "nl", "Latin", "head"),
    LocaleSpec("ru-RU", "ru_RU", "ru", "Cyrillic", "head"),
    LocaleSpec("pl-PL", "pl_PL", "pl", "Latin", "head"),
    # tail locales
    LocaleSpec("el-GR", "el_GR", "el", "Greek", "tail"),
    LocaleSpec("ar-EG", "ar_AA", "ar", "Arabic", "tail"),
    LocaleSpec("he-IL", "he_IL", "he", "Hebrew", "tail"),
    LocaleSpec("uk-UA", "uk_UA", "uk", "Cyrillic", "tail"),
    LocaleSpec("hy-AM", "hy_AM", "hy", "Armenian", "tail"),
    LocaleSpec("cs-CZ", "cs_CZ", "cs", "Latin", "tail"),
    LocaleSpec("fa-IR", "fa_IR", "fa", "Arabic", "tail"),
):
    LOCALES.register(_spec.tag, _spec)

# espeak-ng voice variants by split. Dev and test use variants never heard in training,
# so their WER measures generalisation to new speakers; unlabelled audio (pseudo-labelled
# by a teacher) comes from the training population.
SPLIT_VARIANTS: dict[str, tuple[str, ...]] = {
    "train": ("m1", "m2", "m3", "m4", "f1", "f2", "f3"),
    "dev": ("m5", "m6", "f4"),
    "test": ("m7", "m8", "f5"),
    "unlabelled": ("m1", "m2", "m3", "m4", "f1", "f2", "f3"),
}
RATES = (140, 155, 170, 185)  # espeak-ng -s, words per minute (default 175)
PITCHES = (35, 45, 55, 65)  # espeak-ng -p, 0-99 (default 50)
