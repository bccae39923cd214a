"""Locale keys of adapter banks and the locale -> adapter fallback rule.

Banks are ``nn.ModuleDict``/``nn.ParameterDict`` keyed by BCP-47 tags; such keys cannot
contain ``"."`` (it separates parameter-name components), and ``"shared"`` is reserved for
the file of parameters shared by all locales.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping

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


def resolve_locale(locale: str | None, available: Iterable[str] | object,
                   siblings: Mapping[str, str] | None = None) -> str | None:
    """Adapter key serving ``locale``: THE fallback rule of every entry point.

    1. the exact tag (case- and ``_``/``-``-insensitive): ``el-GR`` -> ``el-GR``;
    2. its language: an adapter for the bare language (``el-GR`` -> ``el``); and for a bare
       language (what language identification returns) the one adapter of that language
       (``el`` -> ``el-GR``; two, e.g. ``pt-BR`` and ``pt-PT``, are ambiguous: no adapter);
    3. a configured sibling: ``siblings`` maps a locale or a language to an adapter locale
       (``{"el-CY": "el-GR"}``), the way to say another locale may use one;
    4. otherwise ``None``: the base model serves the row (warned once per locale).

    ``available`` is a collection of adapter locales or a model with adapters attached.
    """
    if locale is None:
        return None
    if not isinstance(available, (frozenset, set, list, tuple, dict)) and hasattr(available, "named_modules"):
        from asr_adapt.adapters.inject import adapter_locales

        available = adapter_locales(available)
    return _resolve(locale, frozenset(available), tuple(sorted((siblings or {}).items())))


@functools.lru_cache(maxsize=4096)
def _resolve(locale: str, available: frozenset[str], siblings: tuple[tuple[str, str], ...]) -> str | None:
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
    if _norm(locale) == lang:
        same = [a for a in available if language_of(a) == lang]
        if len(same) == 1:
            return same[0]
    mapped = {_norm(k): v for k, v in siblings}
    for tag in (_norm(locale), lang):
        target = mapped.get(tag)
        if target is not None and _norm(target) in by_norm:
            return by_norm[_norm(target)]
    if available:
        log.warning(
            "no adapter for locale %r (nor its language %r, nor a configured sibling) among %s; "
            "its rows use the base model", locale, lang, sorted(available),
        )
    return None
