"""Folding one locale's linear adapters into the base weights, and undoing it exactly.

Merged, the model is the base model adapted to that locale at no inference cost (what an
exported model ships): the adapted linears carry no forward hook (only one routing guard
per parent module remains, :func:`asr_adapt.adapters.inject.suspend_hooks`), so they run
and convert (e.g. to int8) like any other linear. The original weights are kept so
:func:`unmerge` restores them bit for bit (re-subtracting the delta would leave rounding
residue), and with them the hooks and per-row routing.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from asr_adapt.adapters.inject import AttachedSet, _one_set, resume_hooks, suspend_hooks
from asr_adapt.adapters.locales import resolve_locale
from asr_adapt.adapters.registry import AdapterError


def merge_weight(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W': (D_out, D_in) = W + delta, computed in float32 and cast back to W's dtype."""
    return (weight.float() + delta.float()).to(weight.dtype)


def _check_mergeable(sets: list[AttachedSet]) -> None:
    for aset in sets:
        if not aset.spec.mergeable:
            raise AdapterError(
                f"{aset.adapter} adapters cannot be merged into the base weights (they are not a linear "
                "update of a weight matrix); keep them unmerged, or merge only the mergeable type with adapter=..."
            )
        if aset.merged is not None:
            raise AdapterError(f"{aset.adapter} adapters are already merged for {aset.merged!r}; call unmerge() first")


def merge_locale(model: nn.Module, locale: str, adapter: str | None = None) -> str:
    """Fold ``locale``'s delta (with language fallback) into the adapted weights.

    Returns the adapter key that was merged (``"el"`` for ``"el-GR"`` when only ``el``
    exists). While merged, the type's hooks are off the adapted linears; routing rows to
    another locale raises.
    """
    sets = _one_set(model, adapter)
    _check_mergeable(sets)
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    merged_key = None
    for aset in sets:
        key = resolve_locale(locale, aset.locales)
        if key is None:
            raise AdapterError(f"no {aset.adapter} adapter for {locale!r}; available: {sorted(aset.locales)}")
        for t in aset.targets:
            if uses[id(modules[t].weight)] > 1:
                raise AdapterError(f"{t}.weight is tied to another parameter; merging would change both")
        with torch.no_grad():
            for t in aset.targets:
                linear = modules[t]
                bank = getattr(linear, aset.spec.bank_attr)
                aset.originals[t] = linear.weight.detach().clone()
                linear.weight.copy_(merge_weight(linear.weight, bank.delta(key)))
                bank.merged = key
        suspend_hooks(model, aset)
        aset.merged = merged_key = key
    return merged_key


def _check_restorable(modules: dict[str, nn.Module], aset: AttachedSet) -> None:
    for t in aset.targets:
        weight = getattr(modules[t], "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.shape != aset.originals[t].shape:
            raise AdapterError(
                f"{t} was replaced after merging {aset.merged!r} (e.g. converted by set_compute_type), so its "
                "original weights cannot be put back; load the model again to use other locales"
            )


def unmerge(model: nn.Module, adapter: str | None = None) -> bool:
    """Restore the exact pre-merge weights and the hooks. Returns ``False`` when nothing was merged."""
    modules = dict(model.named_modules())
    sets = [aset for aset in _one_set(model, adapter) if aset.merged is not None]
    for aset in sets:  # all checked before any is changed
        _check_restorable(modules, aset)
    for aset in sets:
        with torch.no_grad():
            for t in aset.targets:
                modules[t].weight.copy_(aset.originals.pop(t))
                getattr(modules[t], aset.spec.bank_attr).merged = None
        resume_hooks(model, aset)
        aset.merged = None
    return bool(sets)
