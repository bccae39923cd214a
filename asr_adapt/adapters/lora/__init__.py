"""Per-locale LoRA on linear layers."""

from asr_adapt.adapters.lora.config import LoRAConfig
from asr_adapt.adapters.lora.layer import make_bank
from asr_adapt.adapters.registry import register_adapter

SPEC = register_adapter(
    name="lora",
    config_cls=LoRAConfig,
    param_prefix="lora_",
    target_kind="linears",
    bank_attr="lora_adapters",
    make_bank=make_bank,
    mergeable=True,
    description="per-locale low-rank updates of linear layers",
)

__all__ = ["LoRAConfig", "SPEC"]
