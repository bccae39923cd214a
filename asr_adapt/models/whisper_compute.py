"""Compute types for inference: the precision the frozen Whisper's linear layers run in.

``float32`` is the model as loaded. ``int8`` is the analogue of CTranslate2's
``compute_type="int8"``: every base ``nn.Linear`` (attention and feed-forward projections
of all blocks, and the vocabulary projection) becomes an :class:`Int8Linear` with int8
weights, one scale per output channel, and activations quantised on the fly with one
scale per row (token). Decoding on CPU is dominated by these GEMMs and GEMVs
(bench/RESULTS.md, "Decode speed"); int8 runs them about 4x faster there.

Why per-row activation scales: Whisper's activations have outliers. The input of the
encoder's ``fc2`` reaches ~100 where its mean is ~0.08, always in a few tokens and
channels. PyTorch's stock dynamic quantisation uses one scale per tensor, so one outlier
token sets the step for every token of the batch. On whisper-base (16 short utterances,
teacher-forced on the float32 transcripts) that agreed with float32 on only 66 % of the
next-token argmaxes (mean KL 0.40); one scale per row agreed on 94 % (KL 0.011). Per-row
scales are also what CTranslate2's int8 does.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asr_adapt.models.linear_kernels import BF16Linear, quantize_activations, quantize_rows
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)


def _runs_anywhere(device: torch.device) -> str | None:
    return None


@dataclass(frozen=True)
class ComputeType:
    """One way to run the base model's linear layers.

    encoder, decoder: ``nn.Linear -> nn.Module`` replacement (same call signature) for that
        stack's linear layers, or ``None`` to keep the loaded float32 modules. The vocabulary
        projection belongs to the decoder.
    encoder_autocast: run the encoder under ``torch.autocast`` in this dtype (its convolutions,
        attention and activations too; residual sums and layer norms stay float32), or ``None``.
    cross_attention: dtype of the decoder's cached cross-attention keys/values and of the
        attention over them (the lean step, :mod:`asr_adapt.models.whisper_step`); ``None``:
        float32. A decoder step reads all of them (2 x layers x T x D per row), which makes
        that attention bound by memory traffic; bfloat16 halves it.
    fuse_self_attention: also convert each decoder layer's self-attention q, k and v projections
        as one ``3D x D`` module (one activation quantisation and one GEMM instead of three),
        used by the lean step while the three layers are the converted ones and carry no hooks.
    unavailable: ``device -> reason`` it cannot run there, or ``None`` when it can.
    """

    name: str
    encoder: Callable[[nn.Linear], nn.Module] | None = None
    decoder: Callable[[nn.Linear], nn.Module] | None = None
    encoder_autocast: torch.dtype | None = None
    cross_attention: torch.dtype | None = None
    fuse_self_attention: bool = False
    unavailable: Callable[[torch.device], str | None] = _runs_anywhere

    def check(self, device: torch.device) -> None:
        """Raise ``ValueError`` (one line, what to do) when this type cannot run on ``device``."""
        reason = self.unavailable(device)
        if reason is not None:
            raise ValueError(f"compute type {self.name!r}: {reason}")


COMPUTE_TYPES: Registry[ComputeType] = Registry("compute type")
"""name -> :class:`ComputeType`; ``asr-adapt decode --compute-type`` accepts these names."""
DEFAULT_COMPUTE_TYPE = "float32"


_TINY = torch.finfo(torch.float32).tiny


def _int8_unavailable(device: torch.device) -> str | None:
    # A GPU is refused rather than silently decoding in float32: the user asked for int8
    # for speed, and on a GPU float32 (or half precision) is the fast path anyway.
    if device.type != "cpu":
        return f"runs on CPU only (PyTorch's int8 linear kernels are CPU kernels), not on {device.type}; use float32"
    engine = torch.backends.quantized.engine
    if engine not in ("x86", "fbgemm"):
        return f"needs PyTorch's x86/fbgemm int8 kernels, but the quantized engine here is {engine!r}; use float32"
    return None


def _int32_accumulation() -> bool:
    """Whether fbgemm multiplies int8 with int32 accumulation (AVX512-VNNI) on this CPU.

    Without VNNI, fbgemm's u8 x s8 instruction sums pairs of products in int16 and can
    saturate with full 8-bit activations; PyTorch therefore quantises activations to 7 bits
    by default. With VNNI there is no int16 step, and the 8th bit halves the rounding error
    (next-token KL to float32 on whisper-base: 0.011 with 8 bits, 0.035 with 7). Read from
    Linux's CPU flags; anywhere else the safe 7 bits are kept.
    """
    return "avx512_vnni" in _cpu_flags()


def _quantize_weight(linear: nn.Linear) -> nn.Module:
    """Bias-free dynamically quantised copy of ``linear``: int8 weight, a scale per output channel.

    ``torch.ao.quantization`` is deprecated in favour of torchao, which is not a dependency;
    the module here is still in the installed torch and is the fbgemm/x86 int8 GEMM path,
    so its deprecation warnings are silenced for this call only.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    bare = nn.Linear(linear.in_features, linear.out_features, bias=False)
    bare.weight = nn.Parameter(linear.weight.detach().float(), requires_grad=False)
    bare.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return DynamicLinear.from_float(bare)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


def default_int8_kernel() -> str:
    """``"onednn"`` on CPUs with AMX int8 tiles (where oneDNN's int8 GEMMs beat fbgemm's at every
    whisper-base shape: bench/RESULTS.md, "Kernels"), else ``"fbgemm"``."""
    has_onednn = hasattr(torch.ops.onednn, "qlinear_pointwise") and "onednn" in torch.backends.quantized.supported_engines
    return "onednn" if has_onednn and "amx_int8" in _cpu_flags() else "fbgemm"


class Int8Linear(nn.Module):
    """``nn.Linear`` in int8: per-output-channel weights, per-row activations.

    Each row of the input is divided by its own absolute maximum, quantised with one fixed
    scale (so a row's result never depends on the other rows of the batch: adapter-free rows
    stay identical whatever the adapted rows do), multiplied by the int8 weights with int32
    accumulation, and multiplied back; the bias is added in float32.

    kernel: ``"fbgemm"`` (PyTorch's x86 dynamic-quantisation path) or ``"onednn"`` (oneDNN's
    int8 matmul, AMX tiles where the CPU has them); ``None``: :func:`default_int8_kernel`.
    """

    def __init__(self, linear: nn.Linear, kernel: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = kernel or default_int8_kernel()
        if self.kernel == "fbgemm":
            self.quantized = _quantize_weight(linear)
        elif self.kernel == "onednn":
            q, scale = quantize_rows(linear.weight)
            self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None))
            self.register_buffer("w_scale", scale)
            self.register_buffer("w_zero", torch.zeros(self.out_features, dtype=torch.long))
        else:
            raise ValueError(f"int8 kernel must be 'fbgemm' or 'onednn', got {kernel!r}")
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        # Rows scaled to [-1, 1] map to uint8 [1, 255] (8 bits) or [1, 127] (7 bits) around the zero point.
        self.levels = 127 if _int32_accumulation() else 63
        self.zero_point = self.levels + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D_in) float32 -> (..., D_out) float32."""
        x = x.float()
        if self.kernel == "fbgemm":
            scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(_TINY)
            packed = self.quantized._packed_params._packed_params
            y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x / scale, 1.0 / self.levels, self.zero_point, packed
            )
        else:
            qx, scale = quantize_activations(x, self.levels, self.zero_point)
            y = torch.ops.onednn.qlinear_pointwise(qx.reshape(-1, self.in_features), 1.0 / self.levels, self.zero_point,
                                                   self.packed, self.w_scale, self.w_zero, None, 1.0, 0, torch.float32,
                                                   "none", [], "")
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale)

    def extra_repr(self) -> str:
        bits = 8 if self.levels == 127 else 7
        return (f"in_features={self.in_features}, out_features={self.out_features}, activations={bits}-bit per row, "
                f"kernel={self.kernel}")


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX tiles)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


# The int8 types quantise the linear layers as CTranslate2's int8 does. Where the CPU has
# bfloat16 units, the attention (encoder self-attention, decoder cross-attention: bound by
# reading T x D keys and values) and the encoder's convolutions run in bfloat16, whose
# rounding error is a third of int8's (bench/kernel_probe.py); elsewhere they stay float32.
_BF16_ATTENTION = torch.bfloat16 if native_bf16() else None
COMPUTE_TYPES.register(DEFAULT_COMPUTE_TYPE, ComputeType(DEFAULT_COMPUTE_TYPE))
COMPUTE_TYPES.register("int8", ComputeType("int8", encoder=Int8Linear, decoder=Int8Linear, fuse_self_attention=True,
                                           encoder_autocast=_BF16_ATTENTION, cross_attention=_BF16_ATTENTION,
                                           unavailable=_int8_unavailable))
# The decoder's per-token products are matrix-vector products bound by reading weights, so
# int8 weights pay off most there; the encoder's activations carry the outliers that make
# int8 lossy (bench/RESULTS.md: int8 encoder alone cost 3 words of 103 on German, int8
# decoder alone none), and its large GEMMs gain less. CTranslate2 has no such split.
COMPUTE_TYPES.register("int8_decoder", ComputeType("int8_decoder", decoder=Int8Linear, fuse_self_attention=True,
                                                   cross_attention=_BF16_ATTENTION, unavailable=_int8_unavailable))
# bfloat16 keeps float32's range, so the encoder's outlier activations need no per-row
# scales; rounding to 8 significant bits costs less than int8's (bench/kernel_probe.py) and
# CPUs with AMX run it on their tile units. Under autocast the encoder's attention and
# convolutions run in bfloat16 too, while residual sums stay float32.
COMPUTE_TYPES.register("bfloat16", ComputeType("bfloat16", encoder=BF16Linear, decoder=BF16Linear,
                                                encoder_autocast=torch.bfloat16, cross_attention=torch.bfloat16))
COMPUTE_TYPES.register(
    "bf16_encoder_int8_decoder",
    ComputeType("bf16_encoder_int8_decoder", encoder=BF16Linear, decoder=Int8Linear, encoder_autocast=torch.bfloat16,
                cross_attention=torch.bfloat16, fuse_self_attention=True, unavailable=_int8_unavailable),
)


def convertible(root: nn.Module, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split linear-layer names into (to convert, to keep as they are).

    A linear with forward hooks stays: converting replaces the module, and its hooks (an
    unmerged LoRA/S2-LoRA bank's, which also needs the float ``weight`` to merge later)
    would be lost. A linear without hooks converts even when modules hang under it (a
    merged LoRA/S2-LoRA bank: parameters only, never run by ``Linear.forward``); they move
    to the replacement (:func:`replace_modules`). Block-level adapters (LDA) hook the
    block, not its linears, so those linears convert too.
    """
    modules = dict(root.named_modules())
    convert, keep = [], []
    for name in names:
        mod = modules[name]
        hooked = mod._forward_hooks or mod._forward_pre_hooks
        (keep if hooked or not isinstance(mod, nn.Linear) else convert).append(name)
    return convert, keep


def replace_modules(root: nn.Module, names: Sequence[str], make: Callable[[nn.Module], nn.Module]) -> None:
    """``root.<name> = make(root.<name>)`` for each dotted ``name``, in place.

    Child modules of the old module move to the new one under the same names, so what is
    registered there (e.g. a merged adapter's parameters) keeps its ``state_dict`` keys.
    """
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        old = getattr(parent, child)
        new = make(old)
        for sub_name, sub in old.named_children():
            if hasattr(new, sub_name):
                raise ValueError(f"{name}.{sub_name}: the converted module already has an attribute {sub_name!r}")
            new.add_module(sub_name, sub)
        setattr(parent, child, new)


AUTO = "auto"
AUTO_TABLE = Path(__file__).with_name("compute_auto.json")
"""CPU features -> the compute type ``auto`` picks, written by ``bench/engine_speed.py --write-auto``."""


def auto_compute_type(device: torch.device | str, table: Path | None = None) -> tuple[str, str]:
    """The compute type ``"auto"`` stands for on ``device``, and why.

    On a CPU: the first row of :data:`AUTO_TABLE` whose ``cpu_flags`` this CPU all has (each
    row is the fastest type the benchmark found accurate on a CPU with those features), else
    the table's ``fallback``; on any other device: float32.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return DEFAULT_COMPUTE_TYPE, f"{device.type} device: float32"
    doc = json.loads((table or AUTO_TABLE).read_text())
    flags = _cpu_flags()
    for row in doc.get("rows", []):
        if set(row["cpu_flags"]) <= flags and row["compute_type"] in COMPUTE_TYPES:
            return row["compute_type"], (f"CPU with {', '.join(row['cpu_flags'])}: measured "
                                         f"{row.get('evidence', 'by bench/engine_speed.py')}")
    return doc.get("fallback", DEFAULT_COMPUTE_TYPE), "no measurement for this CPU's features: the safe default"

