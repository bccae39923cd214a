"""Locale keys of adapter banks and the locale -> adapter fallback rule.

Banks are ``nn.ModuleDict``/``nn.ParameterDict`` keyed by BCP-47 tags; such keys cannot
contain ``"."`` (it separates parameter-name components), and ``"shared"`` is reserved for
the file of parameters shared by all locales.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable

from asr_adapt.langtags import language_of

log = logging.getLogger(__name__)

_LOCALE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_locale(locale: str) -> str:
    """Return ``locale`` if it can key an adapter bank, else raise ``ValueError``."""
    if not isinstance(locale, str) or not _LOCALE_RE.match(locale) or locale == "shared":
        raise ValueError(
            f"invalid adapter locale {locale!r}: use a BCP-47 tag such as 'el-GR' or 'el' "
            "(letters, digits, '-', '_'; no '.'; 'shared' is reserved)"
        )
    return locale


def _norm(tag: str) -> str:
    return tag.replace("_", "-").lower()


def resolve_locale(locale: str | None, available: Iterable[str] | object) -> str | None:
    """Adapter key serving ``locale``: exact tag, else its language, else ``None``.

    ``"el-GR"`` -> ``"el-GR"`` if present, else ``"el"`` if present, else ``None`` (logged
    once per locale and adapter set). Tags compare case- and ``_``/``-``-insensitively.
    ``available`` is a collection of adapter locales or a model with adapters attached.
    """
    if locale is None:
        return None
    if not isinstance(available, (frozenset, set, list, tuple, dict)) and hasattr(available, "named_modules"):
        from asr_adapt.adapters.inject import adapter_locales

        available = adapter_locales(available)
    return _resolve(locale, frozenset(available))


@functools.lru_cache(maxsize=4096)
def _resolve(locale: str, available: frozenset[str]) -> str | None:
    # Cached: adapter hooks resolve the same few tags in every layer of every forward pass,
    # and the cache also makes the "no adapter" warning appear once, not once per layer.
    if locale in available:
        return locale
    by_norm = {_norm(a): a for a in available}
    if _norm(locale) in by_norm:
        return by_norm[_norm(locale)]
    lang = language_of(locale)
    if lang in by_norm:
        return by_norm[lang]
    log.warning(
        "no adapter for locale %r (nor its language %r) among %s; its rows use the base model",
        locale, lang, sorted(available),
    )
    return None
