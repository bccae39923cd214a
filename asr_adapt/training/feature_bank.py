"""A whole training set's encoder inputs and targets, computed once and kept on the device.

Pretraining a small model on a GPU is not limited by the GPU but by what feeds it: reading
and resampling audio, the log-mel frontend, tokenising and copying a fresh batch to the
device every step. With a fixed frontend (no waveform augmentation) those results never
change between epochs, so :class:`FeatureBank` computes them once (audio read on a thread
pool, features in large batches on the device) and stores them flat on the device; a
training step then only gathers rows by index (:meth:`FeatureBank.gather`), which is a few
indexing kernels and no host work.

The bank belongs to the backbone family that defines its features: it calls the backbone's
``features`` (normalised (B, T, F)) and ``tokenizer.encode``. Utterances whose audio cannot
be read are marked invalid and dropped from the batches that draw them, as the waveform
loader drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from asr_adapt.data.audio import AudioError
from asr_adapt.data.types import Utterance

log = logging.getLogger(__name__)


@dataclass
class GatheredBatch:
    """Padded rows of a :class:`FeatureBank`.

    feats: (B, T, F) normalised features, zero-padded; flens: (B,) frames;
    targets: (B, U) token ids, zero-padded (U >= 1); tlens: (B,); keep: (B_in,) bool, which
    requested rows were valid (B = keep.sum()).
    """

    feats: torch.Tensor
    flens: torch.Tensor
    targets: torch.Tensor
    tlens: torch.Tensor
    keep: torch.Tensor


class FeatureBank:
    """Flat per-utterance features (sum T_i, F) and token ids (sum U_i,) with offsets, on one device."""

    def __init__(self, feats: torch.Tensor, frame_lens: torch.Tensor, tokens: torch.Tensor,
                 token_lens: torch.Tensor, valid: torch.Tensor) -> None:
        self.feats = feats
        self.frame_lens = frame_lens
        self.frame_offsets = torch.cumsum(frame_lens, 0) - frame_lens
        self.tokens = tokens
        self.token_lens = token_lens
        self.token_offsets = torch.cumsum(token_lens, 0) - token_lens
        self.valid = valid
        # Host copies of the lengths: the padded sizes of a batch are known without a device sync.
        self._frame_lens_cpu = frame_lens.cpu()
        self._token_lens_cpu = token_lens.cpu()
        self._valid_cpu = valid.cpu()

    def __len__(self) -> int:
        return len(self.frame_lens)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.feats, self.tokens))

    @classmethod
    @torch.no_grad()
    def build(cls, backbone, utts: Sequence[Utterance], *, batch_seconds: float = 600.0, jobs: int = 8,
              dtype: torch.dtype = torch.float32, progress: bool = True) -> FeatureBank:
        """Read, featurise and tokenise ``utts`` with ``backbone`` (on the backbone's device).

        Audio is read ``jobs`` files at a time (libsndfile releases the GIL) and featurised in
        batches of at most ``batch_seconds`` of audio; only the features stay in memory.
        """
        from tqdm import tqdm

        order = sorted(range(len(utts)), key=lambda i: utts[i].duration or 0.0)
        per_utt: list[torch.Tensor | None] = [None] * len(utts)

        def load(i: int) -> np.ndarray | None:
            try:
                return utts[i].load()
            except AudioError as e:
                log.warning("feature bank: skipping %s: %s", utts[i].utt_id, e)
                return None

        groups, cur, secs = [], [], 0.0
        for i in order:  # sorted by duration: little padding per featurisation batch
            d = utts[i].duration or 1.0
            if cur and secs + d > batch_seconds:
                groups.append(cur)
                cur, secs = [], 0.0
            cur.append(i)
            secs += d
        if cur:
            groups.append(cur)
        bar = tqdm(total=len(utts), desc="features", unit="utt", disable=not progress, dynamic_ncols=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for group in groups:
                wavs = list(pool.map(load, group))
                ok = [(i, w) for i, w in zip(group, wavs) if w is not None and len(w) > 0]
                if ok:
                    feats, lens = backbone.features([w for _, w in ok])
                    for (i, _), f, n in zip(ok, feats, lens.tolist()):
                        per_utt[i] = f[:n].to(dtype)
                bar.update(len(group))
        bar.close()
        device = backbone.cmvn.mean.device
        n_feat = backbone.config.n_mels
        valid = torch.tensor([f is not None and len(f) > 0 for f in per_utt])
        frames = [f if f is not None else torch.zeros(0, n_feat, dtype=dtype, device=device) for f in per_utt]
        ids = [backbone.tokenizer.encode(u.text or "") if ok else [] for u, ok in zip(utts, valid.tolist())]
        tokens = torch.tensor([t for seq in ids for t in seq] or [0], dtype=torch.long)
        bank = cls(
            torch.cat(frames) if frames else torch.zeros(0, n_feat, dtype=dtype, device=device),
            torch.tensor([len(f) for f in frames], dtype=torch.long, device=device),
            tokens.to(device),
            torch.tensor([len(s) for s in ids], dtype=torch.long, device=device),
            valid.to(device),
        )
        log.info("feature bank: %d utterances (%d unreadable), %.1f h, %.2f GB on %s",
                 len(utts), int((~valid).sum()), float(bank.frame_lens.sum()) * 0.010 / 3600,
                 bank.nbytes() / 1e9, device)
        return bank

    def gather(self, index: torch.Tensor | Sequence[int], dtype: torch.dtype = torch.float32) -> GatheredBatch:
        """Rows ``index`` (B,) as padded device tensors; invalid rows are dropped (see ``keep``)."""
        idx_cpu = torch.as_tensor(index, dtype=torch.long).cpu()
        keep = self._valid_cpu[idx_cpu]
        idx_cpu = idx_cpu[keep]
        t_max = max(1, int(self._frame_lens_cpu[idx_cpu].max())) if len(idx_cpu) else 1
        u_max = max(1, int(self._token_lens_cpu[idx_cpu].max())) if len(idx_cpu) else 1
        idx = idx_cpu.to(self.device, non_blocking=True)
        flens, tlens = self.frame_lens[idx], self.token_lens[idx]
        feats = self._pad_rows(self.feats, self.frame_offsets[idx], flens, t_max).to(dtype)
        targets = self._pad_rows(self.tokens, self.token_offsets[idx], tlens, u_max)
        return GatheredBatch(feats, flens, targets, tlens, keep)

    @staticmethod
    def _pad_rows(flat: torch.Tensor, offsets: torch.Tensor, lens: torch.Tensor, width: int) -> torch.Tensor:
        """Rows ``flat[offsets[b] : offsets[b] + lens[b]]`` zero-padded to ``width``: (B, width, ...)."""
        pos = torch.arange(width, device=flat.device)
        mask = pos[None] < lens[:, None]  # (B, width)
        rows = flat[(offsets[:, None] + pos[None]).clamp(max=max(0, len(flat) - 1))]
        shape = mask.shape + (1,) * (rows.dim() - 2)
        return rows * mask.view(shape).to(rows.dtype)
