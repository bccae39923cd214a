"""Weight formats for a frozen ``nn.Linear`` other than float32, shared by the compute types.

:mod:`asr_adapt.models.whisper_compute` turns them into compute types; ``bench/kernel_probe.py``
times them at whisper-base's shapes.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``w ≈ q * scale[:, None]``. w: (N, K) -> (N, K) int8, (N,) float32."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class BF16Linear(nn.Module):
    """``nn.Linear`` with bfloat16 weights (oneDNN; AMX tiles on CPUs with ``amx_bf16``).

    Outside autocast it takes and returns float32, rounding the input to bfloat16 on the way
    in; under ``torch.autocast(dtype=torch.bfloat16)`` it returns bfloat16 like any autocast
    linear, so the next bfloat16 op reads it without a conversion.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).clone())
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D_in) -> (..., D_out): bfloat16 under autocast, else ``x.dtype``."""
        y = nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias)
        return y if torch.is_autocast_enabled(x.device.type) else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bfloat16"


# Activations with at least this many elements are quantised by a compiled kernel (one pass for
# the row maxima, one for the rounding) where torch.compile works; eager PyTorch makes five
# passes over the (B*T, D) float32 rows, which on the encoder's 8000 x 2048 inputs cost more
# than the int8 product itself. Smaller inputs (a decoder step's rows) stay eager: there the
# compiled function's call overhead is larger than the work.
COMPILE_MIN_ELEMENTS = 1 << 16
_compiled = {"fn": None, "failed": os.environ.get("ASR_ADAPT_COMPILE", "1") == "0"}


def _quantize_activations_eager(x: torch.Tensor, levels: float, zero_point: float) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    # round(x * levels / scale) + zero point as uint8: every value is positive, so adding 0.5
    # before the truncating cast rounds (one op fewer than round()).
    return (x * (levels / scale) + (zero_point + 0.5)).to(torch.uint8), scale


def quantize_activations(x: torch.Tensor, levels: float, zero_point: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row uint8 quantisation: (..., D) float32 -> ((..., D) uint8, (..., 1) row scales).

    Row ``r`` maps ``x[r] / scale[r]`` (in [-1, 1]) to ``round(levels * .) + zero_point``; the
    result does not depend on the other rows. ``ASR_ADAPT_COMPILE=0`` keeps it eager.
    """
    if x.numel() >= COMPILE_MIN_ELEMENTS and not _compiled["failed"]:
        try:
            if _compiled["fn"] is None:
                _compiled["fn"] = torch.compile(_quantize_activations_eager, dynamic=True)
            return _compiled["fn"](x, float(levels), float(zero_point))
        except Exception as e:  # no C++ compiler, an unsupported platform: eager from now on
            _compiled["failed"] = True
            log.warning("torch.compile unavailable for int8 activation quantisation (%s); using eager kernels",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
    return _quantize_activations_eager(x, levels, zero_point)
