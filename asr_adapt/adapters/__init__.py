"""Per-locale adapters for frozen speech recognisers.

Adapter types register themselves (``lda``, ``lora``, ``s2lora``); everything else works on
any ``nn.Module`` given module names (:class:`asr_adapt.models.base.InjectionPoints`) and
routes each batch row through its locale's adapter (:mod:`asr_adapt.routing`).

Typical use::

    attach_adapters(model, points, "s2lora", {"rank": 8}, ["el-GR", "ar-EG"])
    freeze_base(model)
    with routing.use(["el-GR", "ar-EG"]):
        loss = task_loss(model(batch)) + regularization_loss(model)
    save_adapters(model, "exp/adapters", model_fingerprint(model))
"""

# Importing the subpackages registers the built-in types.
from asr_adapt.adapters import lda, lora, s2lora  # noqa: F401
from asr_adapt.adapters.inject import (
    AttachedSet,
    adapter_locales,
    adapter_state_dict,
    add_locale,
    attach_adapters,
    attached_sets,
    count_base_params,
    detach_adapters,
    freeze_base,
    load_adapter_state_dict,
    model_fingerprint,
    regularization_loss,
)
from asr_adapt.adapters.io import AdapterMismatchError, decode_hints, load_adapters, read_meta, save_adapters
from asr_adapt.adapters.locales import resolve_locale
from asr_adapt.adapters.merge import merge_locale, merge_weight, unmerge
from asr_adapt.adapters.registry import (
    ADAPTERS,
    AdapterError,
    AdapterSpec,
    build_config,
    is_adapter_param,
    register_adapter,
)
from asr_adapt.adapters.report import adapter_info, format_info, rank_distribution, write_rank_report

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "AdapterMismatchError",
    "AdapterSpec",
    "AttachedSet",
    "adapter_info",
    "adapter_locales",
    "adapter_state_dict",
    "add_locale",
    "attach_adapters",
    "attached_sets",
    "build_config",
    "decode_hints",
    "count_base_params",
    "detach_adapters",
    "format_info",
    "freeze_base",
    "is_adapter_param",
    "load_adapter_state_dict",
    "load_adapters",
    "merge_locale",
    "merge_weight",
    "model_fingerprint",
    "rank_distribution",
    "read_meta",
    "regularization_loss",
    "register_adapter",
    "resolve_locale",
    "save_adapters",
    "unmerge",
    "write_rank_report",
]
