"""The adapter-type registry: one :class:`AdapterSpec` per adapter type.

Each adapter subpackage (``lda/``, ``lora/``, ``s2lora/``) makes exactly one
:func:`register_adapter` call. The spec's ``param_prefix`` is how the rest of the toolkit
recognises adapter parameters (freezing, saving, fingerprints): a parameter belongs to an
adapter when one dotted component of its name starts with a registered prefix. Prefixes are
therefore required to be disjoint (neither may start with the other), otherwise one type's
parameters could be attributed to another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from asr_adapt.registry import Registry


class AdapterError(RuntimeError):
    """Misuse of the adapter API (unknown locale, double merge, non-mergeable type...)."""


@dataclass(frozen=True)
class AttachContext:
    """What an ``attach_fn`` may need besides its targets.

    model: the root module (S2-LoRA registers its shared matrices on it).
    base_params: number of base (non-adapter) parameters, for size-relative defaults.
    """

    model: nn.Module
    base_params: int


@dataclass(frozen=True)
class AdapterSpec:
    """How one adapter type plugs in.

    name: registry key used in YAML (``adapter: s2lora``) and in saved files.
    config_cls: frozen dataclass with the type's hyper-parameters.
    param_prefix: start of the module attribute names the type registers (``"lda_"``).
    target_kind: ``"blocks"`` (residual blocks, output ``(B, T, D)``) or ``"linears"``
        (``nn.Linear`` modules): which :class:`InjectionPoints` field it attaches to.
    bank_attr: attribute under which the per-locale bank is registered on each target
        module; must start with ``param_prefix``.
    make_bank: ``(target_name, target_module, config, ctx) -> bank module``; the bank owns
        ``add_locale(locale)`` and the forward hook ``hook``.
    shared_attr: attribute on the root model holding parameters shared by all locales
        (``None`` when the type has none); must start with ``param_prefix``.
    prepare: optional ``(targets, config, ctx) -> config`` run once before banks are made
        (e.g. LDA resolves its automatic bottleneck size from the base size).
    mergeable: whether the banks implement ``delta(locale) -> (d_out, d_in)`` so a locale
        can be folded into the base weights.
    penalty: optional ``(bank, config, locales) -> scalar`` regulariser per bank.
    shared_trainable: optional ``config -> bool``; ``False`` keeps shared params frozen.
    """

    name: str
    config_cls: type
    param_prefix: str
    target_kind: str
    bank_attr: str
    make_bank: Callable[..., nn.Module]
    shared_attr: str | None = None
    prepare: Callable[..., Any] | None = None
    mergeable: bool = False
    penalty: Callable[..., Any] | None = None
    shared_trainable: Callable[[Any], bool] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.target_kind not in ("blocks", "linears"):
            raise ValueError(f"target_kind must be 'blocks' or 'linears', got {self.target_kind!r}")
        if not self.param_prefix or "." in self.param_prefix:
            raise ValueError(f"param_prefix must be a non-empty name without '.', got {self.param_prefix!r}")
        for attr in (self.bank_attr, self.shared_attr):
            if attr is not None and not attr.startswith(self.param_prefix):
                raise ValueError(f"attribute {attr!r} must start with the prefix {self.param_prefix!r}")
        if not (dataclasses.is_dataclass(self.config_cls) and self.config_cls.__dataclass_params__.frozen):
            raise ValueError(f"{self.name}: config_cls must be a frozen dataclass")


ADAPTERS: Registry[AdapterSpec] = Registry("adapter type")


def register_adapter(spec: AdapterSpec | None = None, /, **fields: Any) -> AdapterSpec:
    """Register an adapter type: ``register_adapter(AdapterSpec(...))`` or ``register_adapter(name=..., ...)``.

    Rejects a duplicate name and a parameter prefix equal to, or overlapping with (one
    starting with the other), an already registered prefix.
    """
    if spec is None:
        spec = AdapterSpec(**fields)
    elif fields:
        raise TypeError("pass either an AdapterSpec or keyword fields, not both")
    if spec.name in ADAPTERS:
        raise ValueError(f"adapter type {spec.name!r} is already registered")
    for other_name, other in ADAPTERS.items():
        a, b = spec.param_prefix, other.param_prefix
        if a.startswith(b) or b.startswith(a):
            raise ValueError(
                f"parameter prefix {a!r} of adapter type {spec.name!r} overlaps prefix {b!r} of {other_name!r}; "
                "prefixes must be disjoint so every adapter parameter has exactly one owner"
            )
    return ADAPTERS.register(spec.name, spec)


def unregister_adapter(name: str) -> None:
    """Remove a registered type (for tests that register throw-away types)."""
    ADAPTERS._items.pop(name, None)  # noqa: SLF001 - the registry has no public removal on purpose


def build_config(adapter: str, conf: Mapping[str, Any] | Any | None = None) -> Any:
    """``build_config("s2lora", {"rank": 8})`` -> the type's validated frozen config.

    ``conf`` may already be an instance of the config class (returned as is). Unknown keys
    fail with the list of valid ones; lists become tuples so configs stay hashable.
    """
    spec = ADAPTERS.get(adapter)
    if isinstance(conf, spec.config_cls):
        return conf
    conf = dict(conf or {})
    valid = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(conf) - valid)
    if unknown:
        raise ValueError(f"unknown {adapter} option(s) {unknown}; valid: {sorted(valid)}")
    conf = {k: tuple(v) if isinstance(v, list) else v for k, v in conf.items()}
    return spec.config_cls(**conf)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def is_adapter_param(name: str) -> bool:
    """True when a dotted component of ``name`` starts with a registered parameter prefix."""
    return owner_of(name) is not None


def owner_of(name: str) -> tuple[AdapterSpec, str | None] | None:
    """``(spec, locale)`` owning parameter ``name``; locale ``None`` for shared parameters.

    Layout convention every type follows: ``...<bank_attr>.<locale>.<...>`` for per-locale
    parameters and ``<shared_attr>.<...>`` for shared ones.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        for _, spec in ADAPTERS.items():
            if part.startswith(spec.param_prefix):
                if part == spec.shared_attr:
                    return spec, None
                locale = parts[i + 1] if i + 1 < len(parts) else None
                return spec, locale
    return None
