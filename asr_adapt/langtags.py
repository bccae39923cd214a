"""Language tags: one rule for "which language is this locale", one list of languages
written without spaces between words. Depends on nothing, so every layer may use it
(data, decoding, streaming, scoring, serving)."""

from __future__ import annotations

#: Written without spaces between words: decoders join their tokens without a separator,
#: streaming commits characters instead of words, and scoring reports CER by default.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})


def language_of(locale: str | None) -> str | None:
    """``"el-GR" -> "el"``, ``"zh_Hant_TW" -> "zh"``; ``None`` or ``""`` gives ``None``."""
    if not locale:
        return None
    return locale.replace("_", "-").split("-")[0].lower()


def is_no_space(locale: str | None) -> bool:
    """Whether ``locale``'s language is written without spaces between words."""
    return language_of(locale) in NO_SPACE_LANGUAGES
