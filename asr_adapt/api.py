"""The small public Python API: load a model, attach or train adapters for a locale,
transcribe files, score.

Example::

    from asr_adapt import api

    bundle = api.train_adapters("data/train", "data/dev", locales=["el-GR"], adapter="lda",
                                out_dir="exp/el", max_steps=200)
    rec = api.load_model("whisper-base", adapters=bundle)
    hyps = rec.transcribe(["a.wav", "b.wav"], lang="el-GR")
    report = api.score({"a": "καλη μερα"}, {"a": hyps[0].text}, {"a": "el-GR"})
    print(report.to_markdown())

Everything here is a thin layer over the library modules the CLI uses too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asr_adapt.models.base import Hypothesis


class Recognizer:
    """A backbone (+ adapters) ready to transcribe; per-call locale routing.

    Decoding goes through the same :class:`~asr_adapt.decoding.service.Transcriber` as the
    CLI and the server: the same adapter fallback rule and per-row options.
    """

    def __init__(self, backbone, family: str, siblings: Mapping[str, str] | None = None) -> None:
        self.backbone = backbone
        self.family = family
        self.siblings = dict(siblings or {})
        self.hints: dict[str, Any] = {}  # decoding settings the loaded adapters were trained for

    def attach(self, adapter: str, locales: Sequence[str], **conf: Any) -> None:
        """Attach fresh (identity) adapters of type ``adapter`` for ``locales``."""
        from asr_adapt.adapters import attach_adapters, build_config

        self._check_float("attaching adapters")
        attach_adapters(self.backbone, self.backbone.injection_points(), adapter, build_config(adapter, conf), list(locales))

    def load_adapters(self, path: str | os.PathLike) -> list[str]:
        """Load an adapter bundle (checks it was trained on this base); returns its locales."""
        from asr_adapt.adapters import decode_hints, load_adapters, model_fingerprint

        self._check_float("loading adapters")
        locales = load_adapters(self.backbone, path, model_fingerprint(self.backbone), self.backbone.injection_points())
        self.hints.update(decode_hints(path))
        return locales

    def set_compute_type(self, name: str) -> None:
        """Run the base model's linear layers in ``name`` (a ``COMPUTE_TYPES`` name, or ``"auto"``: the
        fastest type ``bench/engine_speed.py`` found accurate on this CPU).

        Inference only and one way; attach or load adapters first (see
        :meth:`asr_adapt.models.whisper.WhisperBackbone.set_compute_type`).
        """
        from asr_adapt.models.whisper_compute import AUTO, COMPUTE_TYPES

        if name != AUTO:
            COMPUTE_TYPES.get(name)  # unknown names fail here, with the known ones
        self.backbone.set_compute_type(name)

    def _check_float(self, what: str) -> None:
        current = self.backbone.compute_type
        if current != "float32":
            # Bundles are checked against the float32 weights, and converting replaced them.
            raise RuntimeError(
                f"{what} needs the float32 model, but it runs in {current}; load the adapters first: "
                f"load_model(..., adapters=..., compute_type={current!r})"
            )

    def transcribe(
        self,
        audio: AudioInput | Sequence[AudioInput],
        lang: str | Sequence[str | None] | None = None,
        batch_size: int = 8,
        sampling_rate: int | None = None,
        **options: Any,
    ) -> list[Hypothesis]:
        """Transcribe audio files or arrays (resampled to 16 kHz mono).

        Args:
            audio: one item or a list; an item is a path (any soundfile-readable format), a
                numpy array of samples ((N,) or (N, channels)) at ``sampling_rate``, or a dict
                ``{"array": ..., "sampling_rate": ...}`` (what Hugging Face ``datasets``
                yields, and the transformers ASR pipeline takes).
            lang: a locale for all items, one per item, ``None`` or ``"auto"`` (language
                identification where the backbone supports it), or ``"auto:el-GR,uk-UA"``
                (identification among these locales). Each item goes through its locale's adapter.
            sampling_rate: sample rate of bare arrays (required for them: a wrong rate would
                silently decode garbage).
            options: decoding options of the backbone family (e.g. ``beam_size=4``) for every
                row; rows an adapter serves decode with the settings recorded with the adapters
                (their training window) on top, as `asr-adapt decode` does.
            adapter_aware_lid (in ``options``): rescore identification with the candidates'
                adapters (see :class:`~asr_adapt.decoding.service.LanguageId`).
        """
        from asr_adapt.decoding.service import LanguageId, Transcriber

        items = [audio] if _is_single(audio) else list(audio)
        aware = bool(options.pop("adapter_aware_lid", False))
        if isinstance(lang, list | tuple):
            langs, lid = [None if x in (None, "auto") else x for x in lang], LanguageId(adapter_aware=aware)
        else:
            fixed, lid = LanguageId.parse(lang, aware)
            langs = [fixed] * len(items)
        if len(langs) != len(items):
            raise ValueError(f"{len(items)} audio items but {len(langs)} locales")
        service = Transcriber(self.backbone, options, hints=self.hints, siblings=self.siblings, lid=lid)
        out: list[Hypothesis] = []
        for i in range(0, len(items), batch_size):
            wavs = [_waveform(a, sampling_rate, i + k) for k, a in enumerate(items[i : i + batch_size])]
            out.extend(d.hyp for d in service.transcribe(wavs, langs[i : i + batch_size]))
        return out


#: one audio item for :meth:`Recognizer.transcribe`
AudioInput = str | os.PathLike | np.ndarray | Mapping[str, Any]


def _is_single(audio: Any) -> bool:
    return isinstance(audio, str | os.PathLike | np.ndarray | Mapping)


def _waveform(item: AudioInput, sampling_rate: int | None, index: int) -> np.ndarray:
    """One item -> (N,) float32 mono at 16 kHz (:class:`~asr_adapt.data.audio.AudioError` naming the item)."""
    from asr_adapt.data.audio import AudioError, load_audio, to_model_rate

    if isinstance(item, str | os.PathLike):
        return load_audio(item)
    name = f"audio item {index}"
    if isinstance(item, Mapping):
        if "array" not in item or "sampling_rate" not in item:
            raise AudioError(name, f"a dict item needs 'array' and 'sampling_rate' keys, got {sorted(item)}")
        return to_model_rate(item["array"], int(item["sampling_rate"]), str(item.get("path") or name))
    if isinstance(item, np.ndarray):
        if sampling_rate is None:
            raise AudioError(name, "a bare array needs its rate: pass sampling_rate=... (or a dict with "
                                   "'array' and 'sampling_rate')")
        return to_model_rate(item, int(sampling_rate), name)
    raise AudioError(name, f"unsupported audio item of type {type(item).__name__}: pass a path, an array or a dict")


def load_model(model: str = "whisper-base", family: str = "whisper", adapters: str | os.PathLike | None = None,
               compute_type: str = "float32", siblings: Mapping[str, str] | None = None,
               **backbone_kwargs: Any) -> Recognizer:
    """Load a backbone by name or directory (offline weights resolve automatically), optionally with adapters.

    compute_type: ``"auto"`` picks the fastest type the benchmark found accurate on this CPU
    (``bench/RESULTS.md``, "Engine speed"); ``"int8"``, ``"int8_decoder"``, ``"bfloat16"``,
    ``"bf16_encoder_int8_decoder"`` choose one (see ``asr-adapt decode --help``); applied after
    the adapters are loaded. siblings: locale or language -> adapter
    locale allowed to serve it (e.g. ``{"el-CY": "el-GR"}``), as ``--sibling`` in the CLI.
    """
    from asr_adapt.loading import load_model as load_backbone

    # Adapters are loaded by the Recognizer, which also keeps the bundle's decoding hints.
    rec = Recognizer(load_backbone(family, model, **backbone_kwargs), family, siblings)
    if adapters:
        rec.load_adapters(adapters)
    rec.set_compute_type(compute_type)
    return rec


def train_adapters(
    train: str | Sequence[str],
    dev: str | Sequence[str],
    locales: Sequence[str],
    out_dir: str | os.PathLike,
    adapter: str = "lda",
    adapter_conf: Mapping[str, Any] | None = None,
    model: str = "whisper-base",
    family: str = "whisper",
    max_steps: int = 200,
    val_every: int = 50,
    lr: float = 2e-3,
    max_batch_seconds: float = 40.0,
    merge_policy: str = "best",
    gate_p: float | None = 0.95,
    **module_kwargs: Any,
) -> Path:
    """Train per-locale adapters with Lightning and merge them checkpoint-wise.

    Writes the experiment (config, checkpoints, per-locale dev history) to ``out_dir`` and
    returns the merged adapter bundle ``out_dir/merged``. As `asr-adapt merge`, the merge is
    gated: a locale keeps its adapter only if it beats the base model on its dev set (paired
    bootstrap, P(improve) >= ``gate_p``; ``None``: no gate); ``merged/merge_report.md`` says
    which locales the base serves.
    """
    import functools

    import lightning as L
    import torch
    import yaml

    from asr_adapt.training.callbacks import ExperimentLock, LocaleCheckpoint
    from asr_adapt.training.checkpoint_io import AtomicCheckpointIO
    from asr_adapt.training.datamodule import ASRDataModule
    from asr_adapt.training.gate import GateOptions, gated_merge
    from asr_adapt.training.module import MODULES

    out = Path(out_dir)

    def as_list(x) -> list[str]:
        return [str(x)] if isinstance(x, str | os.PathLike) else [str(p) for p in x]

    init = {"model": model, "locales": list(locales), "adapter": adapter, "adapter_conf": dict(adapter_conf or {}),
            **module_kwargs}
    module_cls = MODULES.get(family)
    module = module_cls(optimizer=functools.partial(torch.optim.AdamW, lr=lr), **init)
    data = ASRDataModule(train=as_list(train), dev=as_list(dev), locales=list(locales),
                         max_batch_seconds=max_batch_seconds, num_workers=0)
    out.mkdir(parents=True, exist_ok=True)
    # The same config file the CLI writes, so `asr-adapt merge` and the rebuild work on it.
    (out / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"class_path": f"{module_cls.__module__}.{module_cls.__qualname__}", "init_args": init},
         "data": {"train": as_list(train), "dev": as_list(dev), "locales": list(locales)}},
        allow_unicode=True))
    trainer = L.Trainer(
        default_root_dir=str(out), max_steps=max_steps, val_check_interval=val_every, check_val_every_n_epoch=None,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
        gradient_clip_val=1.0, use_distributed_sampler=False, callbacks=[LocaleCheckpoint(), ExperimentLock()],
        plugins=[AtomicCheckpointIO()], enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=data)
    gate = None if gate_p is None else GateOptions(min_prob=gate_p)
    gated_merge(out, out / "merged", policy=merge_policy, gate=gate, base_dev=out / "decode_base_dev")
    return out / "merged"


def score(refs: Mapping[str, str], hyps: Mapping[str, str], langs: Mapping[str, str] | None = None, **config: Any):
    """Per-locale WER/CER report (:class:`asr_adapt.scoring.ScoreReport`); see ``ScoreConfig`` fields."""
    from asr_adapt.scoring import ScoreConfig
    from asr_adapt.scoring import score as _score

    return _score(refs, hyps, langs, ScoreConfig(**config))
