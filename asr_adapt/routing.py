"""Per-row adapter routing: a :class:`Route` travels with the batch it routes.

Adapters route each row of a batch through its own locale's parameters. Backbones and
adapters do not import each other, so the row -> adapter mapping is a small value object
here:

* a decoder carries a :class:`Route` (one adapter key per row, ``None`` = the base model)
  next to the batch tensors, and reshapes it with the *same* index whenever it reshapes the
  batch (``route.select(keep)`` next to ``enc[keep]``, ``route.repeat(k)`` next to a beam
  expansion), so each row keeps its adapter by construction;
* around each model call it opens ``with use(route):`` (one forward pass: nothing in it
  reshapes the batch); adapter layers read :func:`groups` inside that call. The activation
  batch is checked against the route's length, so a reshape the route did not follow fails
  loudly instead of misrouting.

Outside any ``use`` block :func:`current` is ``None`` and adapters are inactive, which
is exactly the frozen base model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

import torch

_state = threading.local()
T = TypeVar("T")


class _Rows:
    __slots__ = ("locales", "_groups", "memo")

    def __init__(self, locales: Sequence[str | None]) -> None:
        self.locales = tuple(locales)
        self._groups: dict[str | None, torch.Tensor] | None = None
        # Values derived from the routing once per ``use`` block (e.g. an adapter set's plan),
        # so the dozens of adapted layers of one forward pass do not each derive them again.
        self.memo: dict = {}

    def groups(self) -> dict[str | None, torch.Tensor]:
        if self._groups is None:
            g: dict[str | None, list[int]] = {}
            for i, loc in enumerate(self.locales):
                g.setdefault(loc, []).append(i)
            self._groups = {k: torch.tensor(v, dtype=torch.long) for k, v in g.items()}
        return self._groups


class Route:
    """One adapter key (a locale of the attached bundle, or ``None``: the base) per batch row.

    Immutable: reshaping returns a new route, so a route handed to a search cannot change
    under its caller.
    """

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[str | None]) -> None:
        self.keys = tuple(keys)

    @classmethod
    def base(cls, n: int) -> Route:
        """``n`` rows, none with an adapter."""
        return cls([None] * n)

    def select(self, index: torch.Tensor | Sequence[int]) -> Route:
        """The rows ``index`` (any order, repeats allowed), as ``tensor[index]`` does."""
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return Route([self.keys[i] for i in idx])

    def repeat(self, n: int) -> Route:
        """Each row ``n`` times consecutively, as ``tensor.repeat_interleave(n, dim=0)`` does."""
        return Route([k for k in self.keys for _ in range(n)])

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> str | None:
        return self.keys[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and other.keys == self.keys

    def __hash__(self) -> int:
        return hash(self.keys)

    def __repr__(self) -> str:
        return f"Route({list(self.keys)})"


@contextlib.contextmanager
def use(route: Route | Sequence[str | None]) -> Iterator[None]:
    """Route the rows of the forward pass(es) in this block: row ``i`` goes to ``route[i]``."""
    keys = route.keys if isinstance(route, Route) else route
    prev = getattr(_state, "rows", None)
    _state.rows = _Rows(keys)
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

    ``batch_size`` is checked against the routed rows: a mismatch means the batch dimension
    changed without its :class:`Route`, which would silently send rows through the wrong
    adapter, so it is an error.
    """
    rows = getattr(_state, "rows", None)
    if rows is None:
        return None
    if len(rows.locales) != batch_size:
        raise RuntimeError(
            f"adapter routing has {len(rows.locales)} rows but the activation batch has {batch_size}; "
            "the decoder reshaped the batch without reshaping its Route (route.select / route.repeat)"
        )
    return rows.groups()


def per_pass(batch_size: int, key: Hashable, make: Callable[[dict[str | None, torch.Tensor]], T]) -> T | None:
    """``make(groups(batch_size))``, computed once per ``use`` block and ``key``; None outside one.

    ``make`` must depend only on the groups and on what ``key`` names.
    """
    rows = getattr(_state, "rows", None)
    if rows is None:
        return None
    g = groups(batch_size)
    try:
        return rows.memo[key]
    except KeyError:
        value = rows.memo[key] = make(g)
        return value
