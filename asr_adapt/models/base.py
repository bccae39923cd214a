"""The interface every backbone implements, and the backbone registry.

A backbone is a frozen pretrained recogniser. It knows neither adapters nor decoding: it
names its *injection points* (blocks an adapter may follow, linear layers an adapter may
modify) and offers the forward pieces (features, encoder, decoder step) that the
decoders in :mod:`asr_adapt.decoding.decoders` search over.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from asr_adapt.registry import Registry


@dataclass(frozen=True)
class InjectionPoints:
    """Where adapters may attach, as module names relative to the backbone.

    blocks: group -> names of residual blocks (e.g. ``"encoder"`` -> Whisper encoder
        layers, ``"first_pass"`` -> causal Conformer blocks). Their output is
        ``(B, T, D)`` (or a tuple whose first element is).
    linears: group -> names of ``nn.Linear`` modules (LoRA-style targets), e.g.
        ``"encoder.attn"`` -> q/k/v/out projections of every encoder layer.
    """

    blocks: dict[str, list[str]] = field(default_factory=dict)
    linears: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Hypothesis:
    """One decoded utterance. ``tokens``: (U,) ids; ``times``: emission time (s) per token if known."""

    text: str
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float | None = None
    lang: str | None = None
    times: list[float] | None = None
    compression_ratio: float | None = None


class Backbone(nn.Module, abc.ABC):
    """A pretrained recogniser wrapped for adaptation.

    Subclasses set :attr:`family` (``"whisper"`` or ``"transducer"``).
    """

    family: str = ""
    #: precision the base's linear layers run in (see :meth:`set_compute_type`)
    compute_type: str = "float32"

    @abc.abstractmethod
    def injection_points(self) -> InjectionPoints: ...

    @abc.abstractmethod
    def compute_loss(self, wavs: Sequence[np.ndarray], texts: Sequence[str], langs: Sequence[str | None]) -> torch.Tensor:
        """Mean training loss of a batch. ``wavs[i]``: (N_i,) float32 16 kHz."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, name_or_dir: str) -> Backbone:
        """Load pretrained weights from a directory or a name the resolver knows."""

    def set_compute_type(self, name: str) -> list[str]:
        """Run the base's linear layers in compute type ``name``, in place (inference only).

        Only ``"float32"`` (as loaded; ``"auto"`` means it) here; families with faster inference
        kernels override this (Whisper: ``asr_adapt.models.whisper_compute.COMPUTE_TYPES``).
        Returns the linear layers left as they were.
        """
        if name not in (self.compute_type, "auto"):  # auto: the one type there is
            raise ValueError(f"compute type {name!r} is not available for the {self.family} backbone")
        return []

    def feature_module(self) -> str | None:
        """Name of the module whose first input is the (B, F, T) log-mel features.

        Training installs SpecAugment as a forward pre-hook there; ``None`` disables it.
        """
        return None

    def fingerprint(self) -> str:
        """Identifies the base weights so adapters refuse to load onto another model.

        Hash of parameter names and shapes plus a few sampled values of every tensor;
        adapter parameters (see :func:`asr_adapt.adapters.is_adapter_param`) are excluded
        by the caller passing ``exclude``.
        """
        return base_fingerprint(self)


def base_fingerprint(module: nn.Module, exclude=lambda name: False) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if exclude(name) or not torch.is_tensor(p):
            continue
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        flat = p.detach().reshape(-1)
        if flat.numel():
            sample = flat[:: max(1, flat.numel() // 8)][:8].float().cpu().numpy()
            h.update(np.round(sample, 5).tobytes())
    return h.hexdigest()[:16]


BACKBONES: Registry[type[Backbone]] = Registry("backbone")


def backbone_class(family: str) -> type[Backbone]:
    """The backbone class registered as ``family``, importing its module first.

    Backbones register themselves when ``asr_adapt.models.<family>`` is imported; importing
    it here keeps start-up cheap (no family loads torch models it does not need) and makes
    any registered name usable from the CLI and configs. Unknown names list the known ones.
    """
    import importlib

    try:
        importlib.import_module(f"asr_adapt.models.{family}")
    except ModuleNotFoundError as e:
        if e.name != f"asr_adapt.models.{family}":
            raise
    return BACKBONES.get(family)
