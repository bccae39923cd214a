"""Choosing the modules an adapter attaches to: named groups of injection points or regexes.

Backbones name their injection points (:class:`asr_adapt.models.base.InjectionPoints`);
adapters never look inside a backbone otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from asr_adapt.models.base import InjectionPoints


@dataclass(frozen=True)
class TargetConfig:
    """Target selection shared by every adapter config (fields inherited by each type)."""

    groups: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "injection-point groups to adapt (e.g. ['encoder']); None = every group of the kind"},
    )
    patterns: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "regexes (re.search) over module names; selects among the groups' modules, "
                  "or among all modules of the right kind when groups is None"},
    )

    def _check_targets(self) -> None:
        for name in ("groups", "patterns"):
            v = getattr(self, name)
            if isinstance(v, (list, str)):
                object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v))
        for p in self.patterns or ():
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"invalid target pattern {p!r}: {e}") from None


def select_targets(
    model: nn.Module,
    points: InjectionPoints,
    kind: str,
    groups: Sequence[str] | None,
    patterns: Sequence[str] | None,
) -> list[str]:
    """Module names to adapt, in model order.

    kind: ``"blocks"`` or ``"linears"``. Linear targets must be ``nn.Linear``.
    """
    table: Mapping[str, list[str]] = getattr(points, kind)
    modules = dict(model.named_modules())
    if groups is not None:
        unknown = [g for g in groups if g not in table]
        if unknown:
            raise ValueError(f"unknown {kind} group(s) {unknown}; this backbone has {sorted(table)}")
        names = [n for g in groups for n in table[g]]
    elif patterns is not None:
        names = [n for n, m in modules.items() if n and (kind == "blocks" or isinstance(m, nn.Linear))]
    else:
        names = [n for g in table for n in table[g]]
    if patterns is not None:
        regs = [re.compile(p) for p in patterns]
        names = [n for n in names if any(r.search(n) for r in regs)]
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"injection points not found in the model: {missing[:5]}")
    if kind == "linears":
        bad = [n for n in names if not isinstance(modules[n], nn.Linear)]
        if bad:
            raise ValueError(f"linear targets must be nn.Linear: {bad[:5]}")
    order = {n: i for i, n in enumerate(modules)}
    names = sorted(set(names), key=order.__getitem__)
    if not names:
        raise ValueError(f"no {kind} selected (groups={groups}, patterns={patterns}); available groups: {sorted(table)}")
    return names


def batch_dim_for(name: str, group_of: Mapping[str, str], batch_dims: Mapping[str, int]) -> int:
    """Batch dimension of activations at module ``name`` (0 unless its group says otherwise).

    Most modules see ``(B, T, D)``; a time-major block stack (``torchaudio`` Conformer layers
    run on ``(T, B, D)``) declares ``batch_dims={group: 1}`` so routing indexes the right dim.
    """
    return int(batch_dims.get(group_of.get(name, ""), 0))


def group_index(points: InjectionPoints, kind: str) -> dict[str, str]:
    """``{module name: group}`` for one kind of injection point."""
    return {n: g for g, names in getattr(points, kind).items() for n in names}
