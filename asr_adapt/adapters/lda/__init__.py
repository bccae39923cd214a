"""Language-dependent adapters (LDA): per-locale residual bottlenecks after blocks."""

from asr_adapt.adapters.lda.config import LDAConfig
from asr_adapt.adapters.lda.layer import make_bank, prepare
from asr_adapt.adapters.registry import register_adapter

SPEC = register_adapter(
    name="lda",
    config_cls=LDAConfig,
    param_prefix="lda_",
    target_kind="blocks",
    bank_attr="lda_adapters",
    make_bank=make_bank,
    prepare=prepare,
    mergeable=False,  # LayerNorm + activation: not a linear map, cannot be folded into weights
    description="language-dependent residual bottleneck adapters after blocks (arXiv 2401.08992)",
)

__all__ = ["LDAConfig", "SPEC"]
