"""LightningDataModule over Kaldi data dirs / JSONL manifests.

Training batches are duration-bucketed with a cap on total seconds, and locales are drawn
with temperature sampling (p_l ∝ n_l^(1/T)) so tail locales are not drowned by head ones.
Audio is read lazily in loader workers; an unreadable file is logged and dropped from its
batch instead of stopping training. With ``feature_cache`` the training batches carry only
indices into ``train_utts`` (no audio): the module featurises the whole training set once on
its device (:class:`~asr_adapt.training.feature_bank.FeatureBank`) and gathers rows from it.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from asr_adapt.data.audio import AudioError
from asr_adapt.data.kaldi import load_utterances
from asr_adapt.data.sampling import BucketingConfig, DurationBucketingBatchSampler, LocaleBalancedSampler
from asr_adapt.data.types import Utterance
from asr_adapt.training.augment import AugmentConfig, augment_waveform

log = logging.getLogger(__name__)


class UtteranceDataset(Dataset):
    """Loads one utterance's audio (and augments it) per index."""

    def __init__(self, utts: list[Utterance], augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.utts = utts
        self.augment = augment if augment and augment.active else None
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict | None:
        u = self.utts[i]
        try:
            wav = u.load()
        except AudioError as e:
            log.warning("skipping %s: %s", u.utt_id, e)
            return None
        if self.augment is not None:
            # Seeded per (epoch, utterance) so a resumed run sees the same noise.
            rng = np.random.default_rng([self.seed, self.epoch, i])
            wav = augment_waveform(wav, self.augment, rng)
        return {"utt_id": u.utt_id, "wav": wav, "text": u.text or "", "lang": u.lang}


class IndexDataset(Dataset):
    """Index, transcript and locale of one utterance; the audio stays where it is (feature cache)."""

    def __init__(self, utts: list[Utterance]) -> None:
        self.utts = utts

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict:
        u = self.utts[i]
        return {"index": i, "utt_id": u.utt_id, "text": u.text or "", "lang": u.lang}


def collate_index(items: list[dict]) -> dict:
    return {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "utt_ids": [it["utt_id"] for it in items],
        "texts": [it["text"] for it in items],
        "langs": [it["lang"] for it in items],
    }


def collate(items: list[dict | None]) -> dict[str, list]:
    items = [it for it in items if it is not None]
    return {
        "utt_ids": [it["utt_id"] for it in items],
        "wavs": [it["wav"] for it in items],
        "texts": [it["text"] for it in items],
        "langs": [it["lang"] for it in items],
    }


class ASRDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: list[str] | None = None,
        dev: list[str] | None = None,
        locales: list[str] | None = None,
        max_batch_seconds: float = 60.0,
        temperature: float = 1.0,
        locale_weights: dict[str, float] | None = None,
        max_duration: float = 30.0,
        num_workers: int = 1,
        augment: dict[str, Any] | None = None,
        seed: int = 0,
        feature_cache: bool = False,
    ) -> None:
        """
        Args:
            train, dev: Kaldi data dirs or JSONL manifests (several are concatenated, e.g.
                labelled + pseudo-labelled data for noisy-student training).
            locales: keep only these locales (``None``: all).
            max_batch_seconds: cap on the summed audio duration of a training batch.
            temperature: locale sampling temperature (1 = natural, large = uniform).
            locale_weights: multipliers of locales' sampling probabilities, e.g.
                ``{en-US: 2.0}`` draws en-US twice as often as the temperature alone would.
            max_duration: drop training utterances longer than this (seconds).
            augment: waveform augmentation (:class:`AugmentConfig` fields).
            feature_cache: featurise the training set once on the training device and draw
                batches from there (GPU pretraining: no per-step audio reading, feature
                extraction, tokenisation or host-to-device copies). Needs a fixed frontend:
                not with waveform ``augment``; SpecAugment still applies per step.
        """
        super().__init__()
        self.save_hyperparameters()
        self.augment = AugmentConfig(**(augment or {}))
        if feature_cache and (self.augment.noise_prob > 0 or self.augment.speed_prob > 0):
            raise ValueError("feature_cache computes each utterance's features once: it cannot be combined with "
                             "waveform augmentation (data.augment); use the model's feature_augment (SpecAugment)")
        self.feature_cache = feature_cache

    def _load(self, paths: list[str] | None, need_text: bool) -> list[Utterance]:
        utts: list[Utterance] = []
        for p in paths or []:
            utts.extend(load_utterances(p))
        if self.hparams.locales:
            keep = set(self.hparams.locales)
            utts = [u for u in utts if u.lang in keep]
        if need_text:
            missing = [u.utt_id for u in utts if not (u.text or "").strip()]
            if missing:
                raise ValueError(f"{len(missing)} training utterances have no transcript (e.g. {missing[:3]}); "
                                 "pseudo-label them first or drop them with `asr-adapt data fix`")
        return utts

    def setup(self, stage: str | None = None) -> None:
        self.train_utts = [u for u in self._load(self.hparams.train, True)
                           if (u.duration or 0.0) <= self.hparams.max_duration]
        self.dev_utts = self._load(self.hparams.dev, True)
        self.train_set = (IndexDataset(self.train_utts) if self.feature_cache
                          else UtteranceDataset(self.train_utts, self.augment, self.hparams.seed))
        self.dev_set = UtteranceDataset(self.dev_utts)

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _train_sampler(self) -> DurationBucketingBatchSampler:
        # Locale-balanced draw (sharded per rank), then bucketed by duration under the seconds cap.
        rank, world = self._rank()
        draw = LocaleBalancedSampler([u.lang for u in self.train_utts], self.hparams.temperature,
                                     seed=self.hparams.seed, rank=rank, world_size=world,
                                     weights=self.hparams.locale_weights)
        cfg = BucketingConfig(max_seconds=self.hparams.max_batch_seconds, seed=self.hparams.seed)
        return DurationBucketingBatchSampler([u.duration or 1.0 for u in self.train_utts], cfg, index_sampler=draw)

    def _dev_sampler(self) -> DurationBucketingBatchSampler:
        rank, world = self._rank()
        cfg = BucketingConfig(max_seconds=self.hparams.max_batch_seconds, shuffle=False)
        return DurationBucketingBatchSampler([u.duration or 1.0 for u in self.dev_utts], cfg, rank=rank, world_size=world)

    def train_dataloader(self) -> DataLoader:
        sampler = self._train_sampler()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        sampler.set_epoch(epoch)
        if self.feature_cache:  # indices only: worker processes would cost more than they save
            return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_index, num_workers=0)
        self.train_set.epoch = epoch
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate,
                          num_workers=self.hparams.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dev_set, batch_sampler=self._dev_sampler(),
                          collate_fn=collate, num_workers=self.hparams.num_workers)
