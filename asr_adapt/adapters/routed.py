"""Per-row application of per-locale adapters, shared by every adapter layer.

An adapter hook sees one activation batch. :func:`plan` turns the active routing
(:mod:`asr_adapt.routing`) into ``[(adapter_key, rows)]`` after the locale fallback, and
:func:`add_routed` adds each locale's delta to its rows only. Rows without an adapter are
left untouched, so they are bit-identical to the base model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from asr_adapt import routing
from asr_adapt.adapters.locales import resolve_locale
from asr_adapt.adapters.registry import AdapterError


def plan(batch: int, keys: frozenset[str]) -> list[tuple[str, torch.Tensor | None]]:
    """``[(key, rows)]`` for the rows that have an adapter; ``rows=None`` means all rows.

    Empty when routing is inactive (the frozen base model).
    """
    g = routing.groups(batch)
    if g is None:
        return []
    by_key: dict[str, list[torch.Tensor]] = {}
    for loc, rows in g.items():
        key = resolve_locale(loc, keys)
        if key is not None:
            by_key.setdefault(key, []).append(rows)
    out: list[tuple[str, torch.Tensor | None]] = []
    for key, parts in by_key.items():
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        out.append((key, None if rows.numel() == batch else rows))
    return out


def check_merged(keys: frozenset[str], merged: str) -> None:
    """Raise when the active routing sends a row anywhere but the merged locale ``merged``.

    While a locale is folded into the base weights every row gets that locale's weights,
    so a row routed to another locale (or to the base, ``None``) would silently get them.
    """
    locales = routing.current()
    if locales is None:
        return
    bad = sorted({str(loc) for loc in set(locales) if resolve_locale(loc, keys) != merged})
    if bad:
        raise AdapterError(
            f"adapters are merged for {merged!r} but rows are routed to {bad}; "
            "unmerge() first, or route only that locale"
        )


def add_routed(
    y: torch.Tensor,
    x: torch.Tensor,
    batch_dim: int,
    steps: list[tuple[str, torch.Tensor | None]],
    delta: Callable[[str, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``y`` plus ``delta(key, x[rows])`` on each planned group of rows (out of place).

    y: (..., B, ..., D_out) base output; x: the adapter input with the same batch dim
    (``batch_dim``); ``delta(key, x_rows)`` returns a tensor shaped like ``y[rows]``.
    """
    out = y
    for key, rows in steps:
        if rows is None:
            out = out + delta(key, x).to(out.dtype)
        else:
            rows = rows.to(x.device)
            out = out.index_add(batch_dim, rows, delta(key, x.index_select(batch_dim, rows)).to(out.dtype))
    return out


class BankMixin:
    """State every per-locale bank carries, next to its ``ModuleDict``/``ParameterDict`` body.

    batch_dim: dimension of the batch in the hooked activations (0 for ``(B, T, D)``).
    merged: locale currently folded into the base weights. The bank's forward hook is then
        removed from its target (:func:`asr_adapt.adapters.merge.merge_locale`), and
        :meth:`guard` runs on the target's parent instead.
    """

    batch_dim: int = 0
    merged: str | None = None

    def locale_keys(self) -> frozenset[str]:
        return frozenset(self.keys())  # type: ignore[attr-defined]

    def steps(self, batch: int) -> list[tuple[str, torch.Tensor | None]]:
        return plan(batch, self.locale_keys())

    def guard(self, module, args: tuple) -> None:
        """Forward pre-hook while merged: rows routed to another locale raise (:func:`check_merged`)."""
        if self.merged is not None:
            check_merged(self.locale_keys(), self.merged)
