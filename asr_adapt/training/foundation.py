"""Foundation models trained by the toolkit itself: initialise, pretrain, export.

The LDA setting freezes a *foundation* model and trains per-locale adapters on it. For the
streaming Conformer-transducer no public multilingual checkpoint exists, so recipes make
their own in three steps, each a plain file format:

1. :func:`init_foundation` writes a randomly initialised model directory from a preset,
   a trained tokenizer and global CMVN statistics of training audio (the normalisation is
   part of the model and must be fixed before pretraining starts);
2. ``asr-adapt train fit`` with ``full_finetune: true`` and ``adapter: null`` pretrains it
   (``TransducerAdaptationModule`` loads the directory with ``from_pretrained``); its
   checkpoints hold every trained *parameter* under ``backbone.``;
3. :func:`export_checkpoint` writes a checkpoint back to a model directory. Buffers (CMVN
   statistics, the mel filterbank) are not parameters, so the module never saves them:
   they come from the init directory, which is why export needs it.

Initialisers are registered per backbone family in :data:`INITIALISERS`; checkpoint pick
policies (``best`` macro dev CER, ``last``) in :data:`PICKS`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr_adapt.fileio import atomic_write_json
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

PREFIX = "backbone."  # where AdaptationModule keeps the backbone in its state_dict
PROVENANCE_FILE = "foundation.json"


@dataclass(frozen=True)
class FoundationInitConfig:
    """How a fresh foundation model directory is made."""

    backbone: str = field(default="transducer", metadata={"help": "backbone family (registry name)"})
    preset: str = field(default="small", metadata={"help": "architecture preset of the family (tiny, small, large)"})
    seed: int = field(default=0, metadata={"help": "seed of the random initial weights and the CMVN sample"})
    cmvn_max_utts: int = field(default=400, metadata={
        "help": "training utterances (random sample) the global CMVN statistics are computed from"})
    cmvn_locales: tuple[str, ...] = field(default=(), metadata={
        "help": "only these locales' audio feeds CMVN (empty: all); the pretraining locales"})
    overrides: tuple[tuple[str, Any], ...] = field(default=(), metadata={
        "help": "(field, value) pairs of the architecture config that replace the preset's, e.g. "
                "(('dropout', 0.0),): a variant without registering a new preset"})

    def __post_init__(self) -> None:
        if self.cmvn_max_utts < 1:
            raise ValueError("cmvn_max_utts must be >= 1")


Initialiser = Callable[[FoundationInitConfig, Path, list], torch.nn.Module]
INITIALISERS: Registry[Initialiser] = Registry("foundation initialiser")


@INITIALISERS.decorator("transducer")
def _init_transducer(config: FoundationInitConfig, tokenizer_dir: Path, wavs: list) -> torch.nn.Module:
    from asr_adapt.models.transducer import TransducerBackbone, load_tokenizer
    from asr_adapt.models.transducer.config import PRESETS

    preset = PRESETS.get(config.preset)
    overrides = dict(config.overrides)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(preset)})
    if unknown:
        raise ValueError(f"unknown transducer config field(s) {unknown}; see TransducerConfig")
    # The tokenizer decides these two; a value here would contradict the tokenizer directory.
    fixed = sorted(set(overrides) & {"vocab_size", "tokenizer"})
    if fixed:
        raise ValueError(f"{fixed} come from the tokenizer and cannot be overridden")
    model = TransducerBackbone.from_preset(config.preset, load_tokenizer(tokenizer_dir), **overrides)
    # CMVN in slices: the statistics are global, but one 400-utterance fbank batch padded
    # to the longest clip would waste memory for nothing.
    feats = []
    for i in range(0, len(wavs), 32):
        f, n = model.raw_features(wavs[i : i + 32])
        feats.extend(x[: int(k)] for x, k in zip(f, n))
    model.cmvn.fit(feats)
    return model


def init_foundation(out: str | Path, tokenizer_dir: str | Path, cmvn_data: str | Path,
                    config: FoundationInitConfig = FoundationInitConfig()) -> torch.nn.Module:
    """Write a randomly initialised ``config.preset`` model with fitted CMVN to ``out``.

    ``cmvn_data``: Kaldi data dir or manifest whose audio (sampled, ``config.cmvn_locales``
    only) gives the normalisation statistics. Returns the model.
    """
    from asr_adapt.data.kaldi import load_utterances

    init = INITIALISERS.get(config.backbone)
    utts = load_utterances(cmvn_data)
    if config.cmvn_locales:
        keep = set(config.cmvn_locales)
        utts = [u for u in utts if u.lang in keep]
    if not utts:
        raise ValueError(f"no utterances in {cmvn_data} for locales {list(config.cmvn_locales) or 'any'}")
    rng = random.Random(config.seed)
    sample = rng.sample(utts, min(config.cmvn_max_utts, len(utts)))
    torch.manual_seed(config.seed)
    model = init(config, Path(tokenizer_dir), [u.load() for u in sample])
    model.save_pretrained(out)
    _write_provenance(out, {"made_by": "init", "preset": config.preset, "seed": config.seed,
                            "tokenizer": str(tokenizer_dir), "cmvn_data": str(cmvn_data),
                            "cmvn_utts": len(sample), "cmvn_locales": list(config.cmvn_locales),
                            "overrides": dict(config.overrides),
                            "parameters": count_parameters(model)})
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- export
def checkpoint_state(ckpt_path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The backbone parameters of a full-finetune checkpoint (prefix stripped) and its metadata.

    Refuses adapter checkpoints: those hold only adapter tensors, not a model.
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters") or {}
    if not hp.get("full_finetune"):
        raise ValueError(f"{ckpt_path}: not a full fine-tuning checkpoint (full_finetune is "
                         f"{hp.get('full_finetune')!r}); adapter checkpoints go through `asr-adapt merge`")
    if hp.get("adapter"):
        # Adapter tensors would be silently dropped by export; the base would not contain them.
        raise ValueError(f"{ckpt_path}: trained with adapter {hp['adapter']!r} attached; export needs adapter: null")
    state = {k[len(PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    if not state:
        raise ValueError(f"{ckpt_path}: no '{PREFIX}*' tensors in the checkpoint")
    return state, {"global_step": ckpt.get("global_step"), "model": hp.get("model")}


def average_states(ckpt_paths: Sequence[str | Path]) -> tuple[dict[str, torch.Tensor], dict]:
    """Element-wise mean of the backbone parameters of several full-finetune checkpoints.

    Checkpoint averaging (icefall's ``--avg``, ESPnet's ``average_checkpoints``): the mean of
    the weights along the end of a run sits nearer the middle of the basin than any one of
    them. Tensors are averaged as the adapter merge averages them (:func:`mean_tensors`); the
    metadata is the last checkpoint's.
    """
    from asr_adapt.training.ckpt_merge import mean_tensors

    if not ckpt_paths:
        raise ValueError("no checkpoints to average")
    loaded = [checkpoint_state(p) for p in ckpt_paths]
    states = [state for state, _ in loaded]
    for path, state in zip(ckpt_paths[1:], states[1:]):
        if state.keys() != states[0].keys():
            raise ValueError(f"{path} holds other tensors than {ckpt_paths[0]}: not the same model")
    return {k: mean_tensors([st[k] for st in states]) for k in states[0]}, loaded[-1][1]


def export_checkpoint(ckpt_path: str | Path | Sequence[str | Path], init_dir: str | Path, out: str | Path,
                      family: str = "transducer") -> torch.nn.Module:
    """Load ``init_dir``, overwrite every parameter from ``ckpt_path``, save to ``out``.

    ``ckpt_path`` may be a list of checkpoints of one run: their weights are averaged
    (:func:`average_states`). Every parameter of the model must be in the checkpoint, and
    nothing else: a mismatch means the checkpoint belongs to another architecture or tokenizer.
    """
    from asr_adapt.loading import load_model as load_backbone

    paths = [ckpt_path] if isinstance(ckpt_path, (str, Path)) else list(ckpt_path)
    state, meta = average_states(paths)
    model = load_backbone(family, str(init_dir))
    params = {n for n, _ in model.named_parameters()}
    missing, unexpected = params - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{paths[-1]} does not fit {init_dir}: {len(missing)} parameters missing "
                         f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})")
    for name in sorted(set(state) - params):
        log.info("checkpoint also sets buffer %s", name)
    # strict=False: the buffers not in the checkpoint keep the init directory's values.
    model.load_state_dict(state, strict=False)
    model.save_pretrained(out)
    record = {"made_by": "export", "checkpoint": str(paths[-1]), "step": meta["global_step"],
              "init_dir": str(init_dir), "parameters": count_parameters(model)}
    if len(paths) > 1:
        record["averaged"] = [str(p) for p in paths]
    _write_provenance(out, record)
    return model


# ---------------------------------------------------------------------------- picking a checkpoint
Pick = Callable[[Path], Path]
PICKS: Registry[Pick] = Registry("checkpoint pick")


def macro_cer(record: dict) -> float:
    """Mean dev CER over the locales of one history record (NaN without locales)."""
    vals = [m["cer"] for m in record.get("locales", {}).values()]
    return sum(vals) / len(vals) if vals else math.nan


@PICKS.decorator("best")
def _pick_best(exp: Path) -> Path:
    """The checkpoint with the lowest macro dev CER (ties: the later step).

    CER, not WER: an early foundation model gets most words wrong, and CER still ranks it.
    """
    from asr_adapt.training.ckpt_merge import load_history

    best = min(load_history(exp), key=lambda r: (macro_cer(r), -r["step"]))
    return exp / "checkpoints" / best["ckpt"]


@PICKS.decorator("last")
def _pick_last(exp: Path) -> Path:
    return exp / "checkpoints" / "last.ckpt"


def pick_checkpoint(exp: str | Path, policy: str = "best") -> Path:
    """Path of the checkpoint ``policy`` chooses in experiment directory ``exp``."""
    path = PICKS.get(policy)(Path(exp))
    if not path.exists():
        raise FileNotFoundError(f"{path} (picked by {policy!r}) does not exist")
    return path


def averaging_window(exp: str | Path, ckpt: str | Path, n: int) -> list[Path]:
    """``ckpt`` and the ``n - 1`` validation checkpoints before it, oldest first.

    The window ends at the chosen checkpoint (``last.ckpt`` stands for the final validation),
    as icefall's ``--epoch E --avg N`` does; it refuses a window the run did not keep.
    """
    from asr_adapt.training.ckpt_merge import load_history

    if n < 1:
        raise ValueError(f"--avg must be >= 1, got {n}")
    exp, ckpt = Path(exp), Path(ckpt)
    names = [r["ckpt"] for r in load_history(exp)]
    if ckpt.name == "last.ckpt":
        end = len(names) - 1
    elif ckpt.name in names:
        end = names.index(ckpt.name)
    else:
        raise ValueError(f"{ckpt} is not a validation checkpoint of {exp}")
    if end + 1 < n:
        raise ValueError(f"--avg {n}: only {end + 1} validation checkpoints up to {ckpt.name} in {exp}")
    paths = [exp / "checkpoints" / name for name in names[end - n + 1: end + 1]]
    if ckpt.name == "last.ckpt":
        paths[-1] = ckpt
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"--avg {n} needs checkpoints the run did not keep: {', '.join(missing)}")
    return paths


def _write_provenance(out: str | Path, record: dict) -> None:
    atomic_write_json(Path(out) / PROVENANCE_FILE, record)


def read_provenance(model_dir: str | Path) -> dict:
    path = Path(model_dir) / PROVENANCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
