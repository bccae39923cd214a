"""Registry of export formats and the adapter types each one can carry.

An exported model is a stock model that a third-party runtime loads without asr-adapt, so
only adapters that are a linear update of existing weight matrices (LoRA, S2-LoRA) can be
shipped: they are folded into the weights. LDA adds layers (LayerNorm, bottleneck,
activation) that a stock Whisper architecture does not have; it cannot be exported to any
of these formats and needs the asr-adapt runtime (``asr-adapt decode`` / ``serve``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from asr_adapt.adapters import ADAPTERS, AdapterError
from asr_adapt.registry import Registry


@dataclass(frozen=True)
class ExportFormat:
    """One output format.

    exporter: ``fn(job: ExportJob, tmp_dir: Path) -> None`` writes the model into ``tmp_dir``
        (the caller renames it into place).
    """

    name: str = field(metadata={"help": "format name used on the command line"})
    description: str = field(metadata={"help": "what loads the result"})
    supported_adapters: frozenset[str] = field(metadata={"help": "adapter types that can be folded into this format"})
    quantizations: tuple[str, ...] = field(metadata={"help": "weight types the format can be written in"})
    default_quantization: str = field(metadata={"help": "weight type when none is asked for"})
    exporter: Callable = field(metadata={"help": "fn(job, tmp_dir) writing the model"})

    def __post_init__(self) -> None:
        if self.default_quantization not in self.quantizations:
            raise ValueError(f"{self.name}: default quantization {self.default_quantization!r} not in {self.quantizations}")

    def check_adapters(self, adapter_types: Iterable[str]) -> None:
        """Raise :class:`AdapterError` naming what each format supports if a type cannot be exported."""
        bad = sorted(set(adapter_types) - self.supported_adapters)
        if bad:
            raise AdapterError(
                f"cannot export {', '.join(bad)} adapters to the {self.name!r} format: they are not a linear "
                f"update of the base weights and a stock Whisper has no place for them. {support_table()}. "
                "Serve such adapters with the asr-adapt runtime (asr-adapt serve / decode) instead."
            )

    def check_quantization(self, quantization: str | None) -> str:
        q = quantization or self.default_quantization
        if q not in self.quantizations:
            raise ValueError(f"the {self.name!r} format supports quantization {list(self.quantizations)}, got {q!r}")
        return q


FORMATS: Registry[ExportFormat] = Registry("export format")


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Register ``fmt``; its adapter types must be registered, mergeable types."""
    for name in fmt.supported_adapters:
        if not ADAPTERS.get(name).mergeable:
            raise ValueError(f"format {fmt.name!r} lists {name!r}, which cannot be merged into weights")
    return FORMATS.register(fmt.name, fmt)


def support_table() -> str:
    """``"hf supports lora, s2lora; ct2 supports lora, s2lora"``, for error messages and help."""
    return "; ".join(f"{n} supports {', '.join(sorted(f.supported_adapters))}" for n, f in FORMATS.items())
