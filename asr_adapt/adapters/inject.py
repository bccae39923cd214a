"""Attaching adapter banks to a model, and the model-level adapter operations.

An attached adapter set lives in three places:

* one bank module per target, registered on the target under the type's ``bank_attr``
  (e.g. ``encoder.layers.0.lda_adapters``), so base parameter names never change and the
  adapter parameters travel with ``state_dict``/``.to()``;
* a forward hook on the target, the bank's bound ``hook`` method (bound methods, unlike
  closures, are re-bound correctly by ``copy.deepcopy``); while a locale is merged the
  hook is taken off the target and a guard pre-hook sits on the target's parent instead
  (:func:`suspend_hooks`), so a merged linear is a plain linear again;
* an :class:`AttachedSet` record in ``model.__dict__`` (type, resolved config, targets),
  used by save/load/merge; it is bookkeeping only and holds no tensors of the model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from asr_adapt.adapters.locales import check_locale
from asr_adapt.adapters.registry import (
    ADAPTERS,
    AdapterError,
    AdapterSpec,
    AttachContext,
    build_config,
    is_adapter_param,
    owner_of,
)
from asr_adapt.adapters.targets import batch_dim_for, group_index, select_targets
from asr_adapt.models.base import InjectionPoints, base_fingerprint

log = logging.getLogger(__name__)

_SETS_ATTR = "_asr_adapt_adapter_sets"


@dataclass
class AttachedSet:
    """Bookkeeping of one attached adapter type on a model."""

    adapter: str
    config: Any
    targets: list[str]
    batch_dims: dict[str, int]  # target name -> batch dim, only where it is not 0
    locales: list[str] = field(default_factory=list)
    merged: str | None = None
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # weights before merge
    handles: dict[str, Any] = field(default_factory=dict)
    hook_order: dict[str, list[int]] = field(default_factory=dict)  # target -> hook ids before merge
    guards: dict[str, Any] = field(default_factory=dict)  # parent module name -> guard pre-hook handle

    @property
    def spec(self) -> AdapterSpec:
        return ADAPTERS.get(self.adapter)


def attached_sets(model: nn.Module) -> dict[str, AttachedSet]:
    """``{adapter type: AttachedSet}`` of the adapters attached to ``model`` (may be empty)."""
    return model.__dict__.setdefault(_SETS_ATTR, {})


def _one_set(model: nn.Module, adapter: str | None) -> list[AttachedSet]:
    sets = attached_sets(model)
    if not sets:
        raise AdapterError("no adapters are attached to this model; call attach_adapters() or load_adapters() first")
    if adapter is None:
        return list(sets.values())
    if adapter not in sets:
        raise AdapterError(f"adapter type {adapter!r} is not attached; attached: {sorted(sets)}")
    return [sets[adapter]]


def banks(model: nn.Module, aset: AttachedSet) -> Iterator[tuple[str, nn.Module]]:
    """``(target name, bank)`` for every target of an attached set."""
    modules = dict(model.named_modules())
    for name in aset.targets:
        yield name, getattr(modules[name], aset.spec.bank_attr)


def adapter_locales(model: nn.Module, adapter: str | None = None) -> list[str]:
    """Sorted locales with adapters on ``model`` (union over attached types)."""
    sets = attached_sets(model)
    chosen = sets.values() if adapter is None else [sets[adapter]] if adapter in sets else []
    return sorted({loc for s in chosen for loc in s.locales})


def count_base_params(model: nn.Module) -> int:
    """Number of distinct non-adapter parameters (tied weights counted once)."""
    return sum(p.numel() for n, p in model.named_parameters() if not is_adapter_param(n))


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the base weights, ignoring any attached adapter parameters."""
    return base_fingerprint(model, exclude=is_adapter_param)


def attach_adapters(
    model: nn.Module,
    points: InjectionPoints,
    adapter: str,
    config: Any,
    locales: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    batch_dims: Mapping[str, int] | None = None,
) -> None:
    """Attach adapter type ``adapter`` for ``locales`` at the injection points it targets.

    config: the type's config or a dict for :func:`build_config`. groups: overrides
    ``config.groups`` (e.g. ``["encoder"]``). batch_dims: ``{group: dim}`` for groups whose
    activations are not batch-first (also read from ``points.batch_dims`` if a backbone
    provides it). New adapters are the identity: the model's outputs do not change.
    """
    spec = ADAPTERS.get(adapter)
    config = build_config(adapter, config)
    if groups is not None:
        config = dataclasses.replace(config, groups=tuple(groups))
    if adapter in attached_sets(model):
        raise AdapterError(f"{adapter} adapters are already attached; use add_locale() to add locales")
    targets = select_targets(model, points, spec.target_kind, config.groups, config.patterns)
    dims = {**getattr(points, "batch_dims", {}), **(batch_dims or {})}
    gi = group_index(points, spec.target_kind)
    per_target = {n: d for n in targets if (d := batch_dim_for(n, gi, dims)) != 0}
    attach_targets(model, adapter, config, targets, per_target, locales)


def attach_targets(
    model: nn.Module,
    adapter: str,
    config: Any,
    targets: Sequence[str],
    batch_dims: Mapping[str, int],
    locales: Sequence[str],
) -> AttachedSet:
    """Attach to explicit module names (used by :func:`attach_adapters` and by loading)."""
    spec = ADAPTERS.get(adapter)
    modules = dict(model.named_modules())
    missing = [t for t in targets if t not in modules]
    if missing:
        raise AdapterError(f"target modules not in the model: {missing[:5]}")
    ctx = AttachContext(model=model, base_params=count_base_params(model))
    if spec.prepare is not None:
        config = spec.prepare([(t, modules[t]) for t in targets], config, ctx)
    aset = AttachedSet(adapter, config, list(targets), dict(batch_dims))
    for t in targets:
        host = modules[t]
        if hasattr(host, spec.bank_attr):
            raise AdapterError(f"{t} already has an attribute {spec.bank_attr!r}")
        bank = spec.make_bank(t, host, config, ctx)
        bank.batch_dim = batch_dims.get(t, 0)
        host.add_module(spec.bank_attr, bank)
        aset.handles[t] = host.register_forward_hook(bank.hook)
    attached_sets(model)[adapter] = aset
    for loc in locales:
        add_locale(model, loc, adapter)
    return aset


def _host_param(host: nn.Module) -> torch.Tensor | None:
    return next((p for n, p in host.named_parameters() if not is_adapter_param(n)), None)


def add_locale(model: nn.Module, locale: str, adapter: str | None = None) -> None:
    """Add identity-initialised adapters for ``locale`` to every attached type (or ``adapter``)."""
    check_locale(locale)
    modules = dict(model.named_modules())
    for aset in _one_set(model, adapter):
        if locale in aset.locales:
            raise AdapterError(f"{aset.adapter} adapters already have locale {locale!r}")
        for t in aset.targets:
            host = modules[t]
            bank = getattr(host, aset.spec.bank_attr)
            bank.add_locale(locale)
            ref = _host_param(host)
            if ref is not None:  # new parameters follow the host's device and dtype
                bank.to(device=ref.device, dtype=ref.dtype)
        aset.locales.append(locale)


def detach_adapters(model: nn.Module, adapter: str | None = None) -> None:
    """Remove adapter banks, hooks and shared parameters (the model is the base again)."""
    modules = dict(model.named_modules())
    for aset in _one_set(model, adapter):
        if aset.merged is not None:
            raise AdapterError(f"{aset.adapter} is merged for {aset.merged!r}; unmerge() before detaching")
        for t in aset.targets:
            aset.handles[t].remove()
            delattr(modules[t], aset.spec.bank_attr)
        if aset.spec.shared_attr and hasattr(model, aset.spec.shared_attr):
            delattr(model, aset.spec.shared_attr)
        del attached_sets(model)[aset.adapter]


def suspend_hooks(model: nn.Module, aset: AttachedSet) -> None:
    """Take the banks' forward hooks off the targets (a merged locale needs no hook).

    Each distinct parent of a target gets one forward pre-hook instead, the bank's
    ``guard``, which only checks the routing: rows routed to another locale raise rather
    than silently getting the merged weights. The targets themselves are then plain
    modules (no hooks, so compute-type conversions treat them like any other linear).
    """
    modules = dict(model.named_modules())
    for t in aset.targets:
        hooks = modules[t]._forward_hooks
        aset.hook_order[t] = list(hooks)
        del hooks[aset.handles[t].id]
    for t in aset.targets:
        parent = t.rpartition(".")[0]
        if parent not in aset.guards:
            bank = getattr(modules[t], aset.spec.bank_attr)
            aset.guards[parent] = modules[parent].register_forward_pre_hook(bank.guard)


def resume_hooks(model: nn.Module, aset: AttachedSet) -> None:
    """Undo :func:`suspend_hooks`: the guards go, each bank's hook returns to its old place
    among the target's hooks (so hooks of other adapter types keep their order)."""
    modules = dict(model.named_modules())
    for handle in aset.guards.values():
        handle.remove()
    aset.guards.clear()
    for t in aset.targets:
        host = modules[t]
        hooks = host._forward_hooks
        hooks[aset.handles[t].id] = getattr(host, aset.spec.bank_attr).hook
        pos = {hid: i for i, hid in enumerate(aset.hook_order.pop(t))}
        ordered = sorted(hooks.items(), key=lambda kv: pos.get(kv[0], len(pos)))  # stable: later hooks stay last
        hooks.clear()
        hooks.update(ordered)


def freeze_base(model: nn.Module) -> tuple[int, int]:
    """Only adapter parameters train. Returns ``(n_trainable, n_total)`` parameter counts."""
    sets = attached_sets(model)
    n_train = n_total = 0
    for name, p in model.named_parameters():
        owner = owner_of(name)
        train = owner is not None
        if owner is not None and owner[1] is None:  # a shared parameter
            spec = owner[0]
            aset = sets.get(spec.name)
            if spec.shared_trainable is not None and aset is not None:
                train = bool(spec.shared_trainable(aset.config))
        p.requires_grad_(train)
        n_total += p.numel()
        n_train += p.numel() if train else 0
    return n_train, n_total


def adapter_state_dict(model: nn.Module, locales: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Adapter tensors only: those of ``locales`` (all when ``None``) plus shared ones.

    Keys are the model's own parameter names, e.g.
    ``model.encoder.layers.0.lda_adapters.el-GR.down.weight`` (D_b, D).
    """
    want = None if locales is None else set(locales)
    if want is not None:
        unknown = want - set(adapter_locales(model))
        if unknown:
            raise AdapterError(f"no adapters for {sorted(unknown)}; attached locales: {adapter_locales(model)}")
    out = {}
    for name, t in model.state_dict().items():
        owner = owner_of(name)
        if owner is None:
            continue
        if owner[1] is None or want is None or owner[1] in want:
            out[name] = t.detach()
    return out


def load_adapter_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copy adapter tensors into ``model``; returns ``(missing, unexpected)`` names.

    Strict (default): every key must be an adapter parameter of the model with the same
    shape, and every adapter parameter of the locales present in ``state`` (plus shared
    ones, if any are present) must be given.
    """
    own = {n: t for n, t in model.state_dict(keep_vars=True).items() if is_adapter_param(n)}
    unexpected = sorted(k for k in state if k not in own)
    # "Missing" is judged per (type, locale) present in the file: a model may hold more
    # locales or other adapter types than one file carries.
    present = {(owner_of(k)[0].name, owner_of(k)[1]) for k in state if k in own}
    missing = sorted(k for k in own if k not in state and (owner_of(k)[0].name, owner_of(k)[1]) in present)
    bad_shape = [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    if bad_shape:
        k = bad_shape[0]
        raise AdapterError(f"shape mismatch for {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    if strict and (missing or unexpected):
        raise AdapterError(f"adapter state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                own[k].copy_(v)
    return missing, unexpected


def regularization_loss(model: nn.Module, locales: Iterable[str] | None = None) -> torch.Tensor:
    """Sum of the attached types' penalties (S2-LoRA: ``beta * sum |lambda|``); 0 otherwise.

    locales: restrict the penalty to these locales (e.g. the locales of the current
    batch, so adapters of locales absent from it are not shrunk); default all.
    """
    ref = next(model.parameters())
    total = torch.zeros((), device=ref.device, dtype=torch.float32)
    for aset in attached_sets(model).values():
        if aset.spec.penalty is None:
            continue
        locs = list(aset.locales) if locales is None else [loc for loc in locales if loc in aset.locales]
        for _, bank in banks(model, aset):
            total = total + aset.spec.penalty(bank, aset.config, locs)
    return total
