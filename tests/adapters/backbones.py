"""Tiny backbones the adapter test matrix runs on. Adding a backbone = one entry in BACKBONES."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from asr_adapt.models.base import InjectionPoints


@dataclass(frozen=True)
class BackboneCase:
    """build(seed) -> eval-mode model; points(model); inputs(batch, seed) -> kwargs; run(model, kwargs) -> Tensor."""

    name: str
    build: Callable[[int], nn.Module]
    points: Callable[[nn.Module], InjectionPoints]
    inputs: Callable[[int, int], dict]
    run: Callable[[nn.Module, dict], torch.Tensor]
    batch_dims: dict[str, int] = field(default_factory=dict)


def _group(model: nn.Module, pattern: str) -> list[str]:
    return [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]


# --- tiny random Whisper (transformers) ------------------------------------------------

def build_whisper(seed: int) -> nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
        max_source_positions=20, max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, dropout=0.0,
    )
    return WhisperForConditionalGeneration(cfg).eval()


def whisper_points(model: nn.Module) -> InjectionPoints:
    layers = r"model\.(encoder|decoder)\.layers\.\d+"
    return InjectionPoints(
        blocks={"encoder": _group(model, r"model\.encoder\.layers\.\d+"),
                "decoder": _group(model, r"model\.decoder\.layers\.\d+")},
        linears={
            "encoder.attn": _group(model, r"model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj"),
            "encoder.ffn": _group(model, r"model\.encoder\.layers\.\d+\.fc[12]"),
            "decoder.self_attn": _group(model, r"model\.decoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj"),
            "decoder.cross_attn": _group(model, r"model\.decoder\.layers\.\d+\.encoder_attn\.(q|k|v|out)_proj"),
            "decoder.ffn": _group(model, layers.replace("(encoder|decoder)", "decoder") + r"\.fc[12]"),
        },
    )


def whisper_inputs(batch: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(batch, 16, 40, generator=g),
            "decoder_input_ids": torch.randint(3, 100, (batch, 5), generator=g)}


def whisper_run(model: nn.Module, kw: dict) -> torch.Tensor:
    return model(**kw).logits


# --- tiny torchaudio Conformer --------------------------------------------------------

class BatchFirst(nn.Module):
    """Runs a time-major torchaudio ConformerLayer on (B, T, D)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.transpose(0, 1), None).transpose(0, 1)


class TinyConformer(nn.Module):
    """(B, T, 12) features -> (B, T, 20) logits through two torchaudio Conformer layers."""

    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        conf = torchaudio.models.Conformer(input_dim=32, num_heads=4, ffn_dim=64, num_layers=2,
                                           depthwise_conv_kernel_size=3, dropout=0.0)
        self.proj = nn.Linear(12, 32)
        self.blocks = nn.ModuleList(BatchFirst(layer) for layer in conf.conformer_layers)
        self.out = nn.Linear(32, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        for b in self.blocks:
            h = b(h)
        return self.out(h)


def build_conformer(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConformer().eval()


def conformer_points(model: nn.Module) -> InjectionPoints:
    return InjectionPoints(
        blocks={"encoder": _group(model, r"blocks\.\d+")},
        linears={"ffn": _group(model, r"blocks\.\d+\.layer\.ffn[12]\.sequential\.[14]")},
    )


def conformer_inputs(batch: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(batch, 7, 12, generator=g)}


BACKBONES = [
    BackboneCase("whisper", build_whisper, whisper_points, whisper_inputs, whisper_run),
    # torchaudio's Conformer layers run time-major: their inner linears see (T, B, D).
    BackboneCase("conformer", build_conformer, conformer_points, conformer_inputs,
                 lambda m, kw: m(**kw), batch_dims={"ffn": 1}),
]
