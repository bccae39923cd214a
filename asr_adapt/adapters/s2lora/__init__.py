"""Sparsely shared LoRA (S2-LoRA): shared low-rank pairs, per-matrix sparse rank vectors."""

from asr_adapt.adapters.registry import register_adapter
from asr_adapt.adapters.s2lora.config import S2LoRAConfig
from asr_adapt.adapters.s2lora.layer import SHARED_ATTR, l1_penalty, make_bank

SPEC = register_adapter(
    name="s2lora",
    config_cls=S2LoRAConfig,
    param_prefix="s2lora_",
    target_kind="linears",
    bank_attr="s2lora_lambdas",
    make_bank=make_bank,
    shared_attr=SHARED_ATTR,
    mergeable=True,
    penalty=l1_penalty,
    shared_trainable=lambda cfg: cfg.train_shared,
    description="sparsely shared LoRA: shared A, B per shape, sparse lambda per matrix (arXiv 2309.11756)",
)

__all__ = ["S2LoRAConfig", "SPEC"]
