"""LightningModules that hold a frozen backbone with per-locale adapters.

One module per backbone family (registered in :data:`MODULES`); they differ only in the
backbone they load and the decoding used for validation. All tail locales train jointly
in locale-mixed batches: each row is routed through its own locale's adapter
(:mod:`asr_adapt.routing`).

What is trained is what is saved: the module's ``state_dict`` holds only trainable
parameters (the adapters, or everything for full fine-tuning), so every checkpoint is an
adapter-only file plus optimizer state, and the frozen base is reloaded from its source.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from asr_adapt import routing
from asr_adapt.adapters import (
    attach_adapters,
    build_config,
    freeze_base,
    is_adapter_param,
    model_fingerprint,
    regularization_loss,
)
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.models.base import Backbone
from asr_adapt.registry import Registry
from asr_adapt.training.augment import AugmentConfig, spec_augment, spectral_envelope
from asr_adapt.training.metrics import LocaleAccumulator

log = logging.getLogger(__name__)

MODULES: Registry[type[AdaptationModule]] = Registry("training module")


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)


def load_backbone(family: str, model: str, **kwargs: Any) -> Backbone:
    """The backbone to train (:func:`asr_adapt.loading.load_model`, no adapters yet).

    ``kwargs`` go to the family's ``from_pretrained`` (e.g. Whisper's ``train_min_window_s``).
    """
    from asr_adapt.loading import load_model

    return load_model(family, model, **kwargs)


class AdaptationModule(L.LightningModule):
    """Frozen backbone + per-locale adapters, trained on locale-mixed batches.

    Batches are dicts with ``wavs`` (list of (N_i,) float32 arrays), ``texts``, ``langs``,
    ``utt_ids`` (see :class:`asr_adapt.training.datamodule.ASRDataModule`).
    """

    family = ""
    #: validation decoding defaults (dev WER is a monitor: greedy, no costly fallbacks)
    default_decode: dict[str, Any] = {}

    def __init__(
        self,
        model: str = "whisper-base",
        locales: list[str] | None = None,
        adapter: str | None = "lda",
        adapter_conf: dict[str, Any] | None = None,
        adapter_groups: list[str] | None = None,
        full_finetune: bool = False,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        feature_augment: dict[str, Any] | None = None,
        decode: dict[str, Any] | None = None,
        init_adapters: str | None = None,
        backbone_conf: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            model: backbone weights: a name the resolver knows (``whisper-base``) or a directory.
            locales: BCP-47 tags that get an adapter; rows of other locales use the base.
            adapter: registered adapter type (``lda``, ``lora``, ``s2lora``) or ``None``.
            adapter_conf: the adapter's config fields, e.g. ``{"rank": 8}``.
            adapter_groups: injection-point groups (``encoder``, ``decoder``, ``first_pass``...);
                ``None`` uses the adapter's default.
            full_finetune: train every base parameter instead (the comparison baseline).
            optimizer, lr_scheduler: callables from config (LightningCLI ``class_path`` form).
            feature_augment: :class:`AugmentConfig` fields for SpecAugment (runs on features here;
                waveform noise/speed are the data module's ``augment``).
            decode: decoding-option overrides for validation (greedy by default).
            init_adapters: adapter bundle to start from (noisy-student: the teacher's adapters).
            backbone_conf: keyword arguments for the backbone's ``from_pretrained``; for Whisper,
                ``train_min_window_s`` sets the encoder window adapters are trained at (decode
                adapted models at the same window: they learn that context).
        """
        super().__init__()
        self.save_hyperparameters()
        if not full_finetune and not adapter:
            raise ValueError("set `adapter` (e.g. lda, lora, s2lora) or `full_finetune: true`")
        self.locales = list(locales or [])
        self.backbone = load_backbone(self.family, model, **(backbone_conf or {}))
        self.base_fingerprint = model_fingerprint(self.backbone)
        if adapter:
            attach_adapters(
                self.backbone, self.backbone.injection_points(), adapter,
                build_config(adapter, adapter_conf or {}), self.locales, adapter_groups,
            )
        if init_adapters:
            from asr_adapt.adapters import load_adapters

            load_adapters(self.backbone, init_adapters, self.base_fingerprint, self.backbone.injection_points())
        if full_finetune:
            for p in self.backbone.parameters():
                p.requires_grad_(True)
        else:
            freeze_base(self.backbone)
        self._saved_keys = {n for n, p in self.named_parameters() if p.requires_grad}
        self._saved_keys |= {n for n, _ in self.named_buffers() if is_adapter_param(n)}
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_base = sum(p.numel() for n, p in self.backbone.named_parameters() if not is_adapter_param(n))
        log.info("trainable parameters: %d (%.3f%% of the %d-parameter base)", n_train, 100 * n_train / n_base, n_base)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.augment = AugmentConfig(**(feature_augment or {}))
        self._spec_hook = None
        self.decode_options = decoding_options(self.backbone, **(self.default_decode | (decode or {})))
        self.dev = LocaleAccumulator()
        self.last_dev_metrics: dict[str, dict[str, float]] = {}
        self.skipped_batches = 0

    # --- what is saved -------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        return {k: v for k, v in full.items() if k[len(prefix):] in self._saved_keys}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        missing = self._saved_keys - set(state_dict)
        unexpected = set(state_dict) - self._saved_keys
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"checkpoint does not match this model's trainable parameters: {len(missing)} missing "
                f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]}); "
                "was it trained with another adapter type, locale list or base model?"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    # --- training --------------------------------------------------------------------
    #: whether train batches may be drawn from a device-resident FeatureBank (``index`` batches)
    supports_feature_cache = False

    def _build_feature_bank(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if not getattr(dm, "feature_cache", False) or getattr(self, "bank", None) is not None:
            return
        if not self.supports_feature_cache:
            raise ValueError(f"data.feature_cache is not supported for the {self.family} backbone")
        from asr_adapt.training.feature_bank import FeatureBank

        self.bank = FeatureBank.build(self.backbone, dm.train_utts, progress=self.trainer.is_global_zero)

    def on_fit_start(self) -> None:
        self._build_feature_bank()
        if self.augment.feature_level and self._spec_hook is None:
            name = self.backbone.feature_module()
            if name is None:
                log.warning("backbone %s has no feature module; SpecAugment disabled", self.family)
            else:
                self._spec_hook = self.backbone.get_submodule(name).register_forward_pre_hook(self._spec_augment_hook)

    def on_train_start(self) -> None:
        # Backbones load in eval mode and Lightning preserves submodule modes, so switch the
        # whole tree (frozen base included) to train mode: dropout, and the transducer's
        # dynamic chunk training, depend on it. Validation restores modes around itself.
        self.train()

    def _spec_augment_hook(self, module, args):
        if not self.training:
            return None
        return (self.augment_features(args[0]),) + tuple(args[1:])

    def augment_features(self, feats: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Training-time feature noise on (B, F, T) log-mel: spectral envelope, then SpecAugment.

        ``scale``: (F,) per-bin factor of normalised features (features cached after CMVN)."""
        if self.augment.spectral_envelope > 0:
            feats = spectral_envelope(feats, self.augment.spectral_envelope, scale)
        if self.augment.spec_augment:
            feats = spec_augment(feats, self.augment)
        return feats

    def train_loss(self, batch: dict) -> torch.Tensor:
        """The backbone's training loss on one batch (families may add terms or a curriculum)."""
        return self.backbone.compute_loss(batch["wavs"], batch["texts"], batch["langs"])

    def training_step(self, batch: dict, batch_idx: int):
        with routing.use(batch["langs"]):
            loss = self.train_loss(batch)
        reg = regularization_loss(self.backbone)
        total = loss + reg
        if not torch.isfinite(total):
            # A NaN/inf batch must never reach the adapters: skip the step and count it.
            self.skipped_batches += 1
            log.warning("non-finite loss on batch %d (utts %s...); skipped (%d so far)",
                        batch_idx, batch["utt_ids"][:3], self.skipped_batches)
            self.log("train/skipped_batches", float(self.skipped_batches))
            return None
        bs = len(batch["langs"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if reg.requires_grad:
            self.log("train/reg", reg, batch_size=bs)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with routing.use(batch["langs"]):
            loss = self.backbone.compute_loss(batch["wavs"], batch["texts"], batch["langs"])
        # Training locales are the adapter keys: each row is routed to its own locale's adapter.
        hyps = transcribe_batch(self.backbone, batch["wavs"], batch["langs"], self.decode_options, route=batch["langs"])
        self.log("val/loss", loss, batch_size=len(batch["wavs"]), sync_dist=True)
        self.dev.add(batch["utt_ids"], batch["texts"], [h.text for h in hyps], batch["langs"])

    def on_validation_epoch_start(self) -> None:
        self.dev.reset()

    def on_validation_epoch_end(self) -> None:
        metrics = self.dev.compute(distributed=self.trainer.world_size > 1)
        self.last_dev_metrics = metrics
        self.last_dev_utt_errors = self.dev.utt_errors
        for loc, m in metrics.items():
            self.log(f"dev_wer/{loc}", m["wer"], rank_zero_only=True)
            self.log(f"dev_cer/{loc}", m["cer"], rank_zero_only=True)

    def configure_optimizers(self):
        opt = self.optimizer_factory(decay_groups(self))
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "step"}}


@MODULES.decorator("whisper")
class WhisperAdaptationModule(AdaptationModule):
    """Whisper encoder-decoder (frozen) + per-locale adapters."""

    family = "whisper"
    # A looping hypothesis just counts as errors on dev; re-decoding it at 30 s would
    # dominate validation time.
    default_decode = {"fallback": "none"}


@MODULES.decorator("transducer")
class TransducerAdaptationModule(AdaptationModule):
    """Streaming cascaded Conformer-transducer (frozen) + per-locale adapters."""

    family = "transducer"
    supports_feature_cache = True

    def __init__(self, model: str = "exp/foundation", full_context_steps: int = 0, **kwargs: Any) -> None:
        """
        Args:
            full_context_steps: train the first pass with full attention for this many steps
                before dynamic chunks start (a young model learns the alignment first, then
                to stream); 0: dynamic chunks from the first step.
        """
        super().__init__(model=model, **kwargs)
        if full_context_steps < 0:
            raise ValueError("full_context_steps must be >= 0")
        self.full_context_steps = full_context_steps

    def train_loss(self, batch: dict) -> torch.Tensor:
        loss_kw = {"chunk_size": -1, "left_chunks": -1} if self.global_step < self.full_context_steps else {}
        loss_kw["step"] = self.global_step  # the pruned transducer loss's warm-up
        if "index" in batch:  # a feature-cache batch: rows of the device-resident bank
            g = self.bank.gather(batch["index"])
            langs = [lang for lang, k in zip(batch["langs"], g.keep.tolist()) if k]
            feats = g.feats
            if self.augment.feature_level:  # bank features are normalised: the envelope is scaled by CMVN
                feats = self.augment_features(feats.transpose(1, 2), self.backbone.cmvn.istd).transpose(1, 2)
            with routing.use(langs):
                terms = self.backbone.loss_terms_from_features(feats, g.flens, None, langs,
                                                               targets=(g.targets, g.tlens), **loss_kw)
        else:
            terms = self.backbone.loss_terms(batch["wavs"], batch["texts"], batch["langs"], **loss_kw)
        bs = len(batch["langs"])
        for name, value in terms.items():  # each pass's transducer (and CTC) loss on its own
            if name != "loss":
                self.log(f"train/{name}", value.detach(), batch_size=bs)
        return terms["loss"]


def decay_groups(module: torch.nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in two optimizer groups: matrices (the optimizer's weight decay)
    and biases, norm gains and embeddings (``weight_decay=0``).

    Decaying a LayerNorm gain or a bias towards zero fights the normalisation itself and,
    in a young transducer, the blank bias the joiner needs; BERT, ESPnet and icefall all
    exempt them. With ``weight_decay: 0`` in the recipe both groups are the same.
    """
    decay, plain = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "norm" in name or isinstance(_owner(module, name), torch.nn.Embedding)
        (plain if exempt else decay).append(p)
    return [g for g in ({"params": decay}, {"params": plain, "weight_decay": 0.0}) if g["params"]]


def _owner(module: torch.nn.Module, param_name: str) -> torch.nn.Module:
    return module.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else module


def macro(metrics: Mapping[str, Mapping[str, float]], key: str = "wer") -> float:
    vals = [m[key] for m in metrics.values()]
    return sum(vals) / len(vals) if vals else math.nan
