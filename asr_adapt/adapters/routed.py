"""Per-row application of per-locale adapters, shared by every adapter layer.

An adapter hook sees one activation batch. :func:`plan` turns the active routing
(:mod:`asr_adapt.routing`) into ``[(adapter_key, rows)]`` after the locale fallback, once
per forward pass, and :func:`add_routed` adds each locale's delta to its rows only. Rows
without an adapter are left untouched, so they are bit-identical to the base model.

Low-rank adapters (LoRA, S2-LoRA) take :func:`add_low_rank` instead: one down-projection
for every locale in the batch at once, a per-row mask (LoRA) or gate (S2-LoRA) that keeps
each row's own locale's ranks (zero for rows without an adapter), one up-projection
accumulated into the layer's output. Two dense GEMMs per layer, whatever the number of
locales in the batch, where a loop over locales costs a row gather, two GEMMs and a scatter
per locale (a 4-locale decode batch paid 33 % over the base for that loop, bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from asr_adapt import routing
from asr_adapt.adapters.locales import resolve_locale
from asr_adapt.adapters.registry import AdapterError


def plan(batch: int, keys: frozenset[str]) -> list[tuple[str, torch.Tensor | None]]:
    """``[(key, rows)]`` for the rows that have an adapter; ``rows=None`` means all rows.

    Empty when routing is inactive (the frozen base model). Computed once per forward pass
    and key set (:func:`asr_adapt.routing.per_pass`).
    """
    return routing.per_pass(batch, ("plan", keys), lambda g: _plan(batch, keys, g)) or []


def _plan(batch: int, keys: frozenset[str], g: dict) -> list[tuple[str, torch.Tensor | None]]:
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


def row_slots(batch: int, keys: frozenset[str]) -> tuple[tuple[str, ...], torch.Tensor] | None:
    """``(active, slots)``: the adapter keys some row of this pass uses, in plan order, and
    (B,) the index in ``active`` of each row's key, ``len(active)`` for rows without one.

    None when no row has an adapter (or routing is inactive). Once per forward pass.
    """
    def make(_groups: dict) -> tuple[tuple[str, ...], torch.Tensor] | None:
        steps = plan(batch, keys)
        if not steps:
            return None
        slots = torch.full((batch,), len(steps), dtype=torch.long)
        for i, (_, rows) in enumerate(steps):
            slots[slice(None) if rows is None else rows] = i
        return tuple(k for k, _ in steps), slots

    return routing.per_pass(batch, ("slots", keys), make)


def add_low_rank(
    y: torch.Tensor,
    x: torch.Tensor,
    batch_dim: int,
    down: torch.Tensor,
    up: torch.Tensor,
    *,
    row_mask: torch.Tensor | None = None,
    row_gate: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """``y + scale * (gate(x @ down.T)) @ up.T`` per batch row (in place on ``y`` when autograd is off).

    y: (..., B, ..., D_out); x: (..., B, ..., D_in), batch at ``batch_dim`` in both;
    down: (K, D_in); up: (D_out, K). Per row, ``row_mask`` (B, K) bool is True on the ranks
    that are not the row's own, which are overwritten with exact zeros (a fill, not a
    product: another locale's overflow, inf * 0, must not reach this row), and ``row_gate``
    (B, K) weights the ranks.
    A row whose ranks are all masked or gated to zero keeps the base output exactly.
    """
    z = (x if x.dtype == down.dtype else x.to(down.dtype)) @ down.t()
    shape = [1] * z.dim()
    shape[batch_dim if batch_dim >= 0 else z.dim() + batch_dim] = y.shape[batch_dim]
    shape[-1] = z.shape[-1]
    if row_mask is not None:
        z = z.masked_fill_(row_mask.reshape(shape), 0.0)  # z is fresh: no copy
    if row_gate is not None:
        z = z * row_gate.reshape(shape)
    if not torch.is_grad_enabled() and y.dtype == up.dtype and y.is_contiguous():
        # Decoding: accumulate into the layer's fresh output with one GEMM; no full-size
        # temporary and no add pass (on the encoder's (B T, D) activations those two passes
        # cost more than the low-rank GEMMs). Under autograd the output stays untouched.
        y.view(-1, y.shape[-1]).addmm_(z.reshape(-1, z.shape[-1]), up.t(), alpha=scale)
        return y
    return y + (scale * (z @ up.t())).to(y.dtype)


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
        # Asked by every adapted layer on every forward pass. Locales are only ever added to a
        # bank, so the set changes exactly when its size does.
        keys = self.__dict__.get("_locale_keys")
        if keys is None or len(keys) != len(self):  # type: ignore[arg-type]
            keys = self.__dict__["_locale_keys"] = frozenset(self.keys())  # type: ignore[attr-defined]
        return keys

    def steps(self, batch: int) -> list[tuple[str, torch.Tensor | None]]:
        return plan(batch, self.locale_keys())

    def guard(self, module, args: tuple) -> None:
        """Forward pre-hook while merged: rows routed to another locale raise (:func:`check_merged`)."""
        if self.merged is not None:
            check_merged(self.locale_keys(), self.merged)
