"""Per-sample locale routing shared by backbones and adapters.

Adapters route each row of a batch through its own locale's parameters. Backbones and
adapters do not import each other, so the per-row locale list lives here, in a
thread-local context (the server decodes on several threads):

* the caller (trainer, decoder, server) opens ``with use(["el-GR", "ar-EG", None]):``
  around a forward pass; ``None`` means "no adapter" for that row;
* a backbone that reorders, expands or prunes the batch dimension inside the pass
  (beam expansion, beam reordering, dropping finished rows, chunking) calls
  :func:`select_rows` with the row index it applied, so adapters stay aligned;
* adapter layers call :func:`current` to get the rows' locales, or :func:`groups` for
  ``{locale: row index tensor}``.

Outside any ``use`` block :func:`current` is ``None`` and adapters are inactive, which
is exactly the frozen base model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch

_state = threading.local()


class _Rows:
    __slots__ = ("locales", "_groups")

    def __init__(self, locales: Sequence[str | None]) -> None:
        self.locales = tuple(locales)
        self._groups: dict[str | None, torch.Tensor] | None = None

    def groups(self) -> dict[str | None, torch.Tensor]:
        if self._groups is None:
            g: dict[str | None, list[int]] = {}
            for i, loc in enumerate(self.locales):
                g.setdefault(loc, []).append(i)
            self._groups = {k: torch.tensor(v, dtype=torch.long) for k, v in g.items()}
        return self._groups


@contextlib.contextmanager
def use(locales: Sequence[str | None]) -> Iterator[None]:
    """Route the rows of the next forward passes: ``locales[i]`` is row ``i``'s locale."""
    prev = getattr(_state, "rows", None)
    _state.rows = _Rows(locales)
    try:
        yield
    finally:
        _state.rows = prev


def current() -> tuple[str | None, ...] | None:
    """Locale per batch row, or ``None`` when no routing is active."""
    rows = getattr(_state, "rows", None)
    return None if rows is None else rows.locales


def groups(batch_size: int) -> dict[str | None, torch.Tensor] | None:
    """``{locale: LongTensor of row indices}`` for a batch of ``batch_size`` rows.

    ``batch_size`` is checked against the routed rows: a mismatch means the backbone
    changed the batch dimension without calling :func:`select_rows`, which would silently
    send rows through the wrong adapter, so it is an error.
    """
    rows = getattr(_state, "rows", None)
    if rows is None:
        return None
    if len(rows.locales) != batch_size:
        raise RuntimeError(
            f"adapter routing has {len(rows.locales)} rows but the activation batch has {batch_size}; "
            "the backbone must call asr_adapt.routing.select_rows() when it reshapes the batch"
        )
    return rows.groups()


def select_rows(index: torch.Tensor | Sequence[int]) -> None:
    """The backbone kept rows ``index`` (any order, repeats allowed) of the current batch."""
    rows = getattr(_state, "rows", None)
    if rows is None:
        return
    idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
    _state.rows = _Rows([rows.locales[i] for i in idx])


def repeat_rows(n: int) -> None:
    """Each row repeated ``n`` times consecutively (``repeat_interleave``), e.g. beam expansion."""
    rows = getattr(_state, "rows", None)
    if rows is None or n == 1:
        return
    _state.rows = _Rows([loc for loc in rows.locales for _ in range(n)])


@contextlib.contextmanager
def preserved() -> Iterator[None]:
    """Restore the routing after a block that calls :func:`select_rows` (e.g. a decode loop)."""
    prev = getattr(_state, "rows", None)
    try:
        yield
    finally:
        _state.rows = prev
