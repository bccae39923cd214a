"""Sharded batch transcription with Lightning's predict loop (pseudo-labelling large sets).

Each process takes every ``world_size``-th utterance (no padding, so nothing is decoded
twice), appends its hypotheses to ``OUT/shards/rank<r>.jsonl`` as they are produced
(flushed: a killed run keeps them), and skips utterances already present in any shard
when re-run. Rank 0 then merges the shards into ``OUT/hyp.jsonl`` (one line per
utterance, sorted, written atomically). Unreadable audio goes to ``OUT/failed.tsv``.
Runs on CPU processes (``strategy: ddp``/gloo) and GPUs/nodes alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from asr_adapt.data.audio import AudioError
from asr_adapt.data.types import Utterance
from asr_adapt.fileio import JsonlAppender, atomic_write, read_jsonl

log = logging.getLogger(__name__)


class _Shard(Dataset):
    def __init__(self, utts: list[Utterance]) -> None:
        self.utts = utts

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict:
        u = self.utts[i]
        try:
            return {"utt": u, "wav": u.load(), "error": None}
        except AudioError as e:
            return {"utt": u, "wav": None, "error": e.reason}


def _collate(items: list[dict]) -> list[dict]:
    return items


class TranscribeModule(L.LightningModule):
    """Wraps a :class:`~asr_adapt.decoding.service.Transcriber` for ``trainer.predict``."""

    def __init__(self, transcriber, lang_override: str | None = None) -> None:
        super().__init__()
        self.backbone = transcriber.backbone  # a submodule: Lightning moves it to the rank's device
        self.transcriber = transcriber
        self.lang_override = lang_override
        # With fewer utterances left than processes a rank's share is empty; it still has to
        # run the (empty) loop so the process group forms (see predict()).
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Waveforms stay numpy until the backbone batches them (on its own device).
        return batch

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        ok = [b for b in batch if b["wav"] is not None]
        out = [{"utt_id": b["utt"].utt_id, "audio": b["utt"].audio, "error": b["error"]}
               for b in batch if b["wav"] is None]
        if ok:
            langs = [self.lang_override or b["utt"].lang for b in ok]
            t0 = time.perf_counter()
            decoded = self.transcriber.transcribe([b["wav"] for b in ok], langs)
            dt = (time.perf_counter() - t0) / len(ok)
            for b, d in zip(ok, decoded):
                h = d.hyp
                out.append({
                    "utt_id": b["utt"].utt_id, "audio": b["utt"].audio, "text": h.text,
                    "lang": d.locale, "adapter": d.adapter, "expected_lang": b["utt"].lang,
                    "duration": len(b["wav"]) / 16000, "avg_logprob": h.avg_logprob,
                    "compression_ratio": h.compression_ratio, "seconds": dt,
                })
        return out


class ShardWriter(BasePredictionWriter):
    def __init__(self, out_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self._writers: dict[int, JsonlAppender] = {}

    def _w(self, rank: int, name: str) -> JsonlAppender:
        key = hash((rank, name))
        if key not in self._writers:
            self._writers[key] = JsonlAppender(self.out_dir / "shards" / f"{name}.rank{rank}.jsonl")
        return self._writers[key]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for rec in prediction:
            self._w(trainer.global_rank, "failed" if rec.get("error") else "hyp").write(rec)

    def on_predict_end(self, trainer, pl_module) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


@dataclass(frozen=True)
class PredictSummary:
    decoded: int
    skipped_done: int
    failed: int
    seconds: float

    @property
    def utts_per_second(self) -> float:
        return self.decoded / self.seconds if self.seconds else 0.0


def done_ids(out_dir: Path, kind: str = "hyp") -> set[str]:
    ids: set[str] = set()
    for p in sorted((out_dir / "shards").glob(f"{kind}.rank*.jsonl")):
        ids |= {r["utt_id"] for r in read_jsonl(p)}
    return ids


def merge_shards(out_dir: Path) -> tuple[list[dict], list[dict]]:
    """Union of all shards, one record per utterance, sorted by id; writes hyp.jsonl and failed.tsv."""
    import json

    def union(kind: str) -> list[dict]:
        recs: dict[str, dict] = {}
        for p in sorted((out_dir / "shards").glob(f"{kind}.rank*.jsonl")):
            for r in read_jsonl(p):
                recs.setdefault(r["utt_id"], r)
        return [recs[k] for k in sorted(recs)]

    hyps = union("hyp")
    good = {r["utt_id"] for r in hyps}
    failed = [r for r in union("failed") if r["utt_id"] not in good]  # a later retry may have succeeded
    atomic_write(out_dir / "hyp.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in hyps))
    atomic_write(out_dir / "failed.tsv", "".join(f"{r['audio']}\t{r['utt_id']}\t{r['error']}\n" for r in failed))
    return hyps, failed


def predict(
    transcriber,
    utts: list[Utterance],
    out_dir: str | Path,
    batch_size: int = 8,
    trainer_kwargs: dict | None = None,
    lang_override: str | None = None,
) -> PredictSummary:
    """Transcribe ``utts`` into ``out_dir`` (resumable, sharded over the trainer's processes)."""
    out_dir = Path(out_dir)
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        use_distributed_sampler=False, callbacks=[ShardWriter(out_dir)],
        **({"accelerator": "cpu", "devices": 1} | (trainer_kwargs or {})),
    )
    rank, world = trainer.global_rank, trainer.world_size
    done = done_ids(out_dir) | done_ids(out_dir, "failed")
    todo = [u for u in utts if u.utt_id not in done]
    # Sort by duration so each batch holds similar lengths (less padding), then shard.
    todo.sort(key=lambda u: (u.duration or 0.0, u.utt_id))
    mine = todo[rank::world]
    t0 = time.perf_counter()
    # Every rank sees the same ``todo`` (read before any rank writes), so all of them call
    # ``trainer.predict`` or none does. A rank with an empty share (fewer utterances left
    # than processes) must still call it: under DDP that call launches the other
    # processes and joins the process group, and a rank that skips it leaves the others
    # waiting at the rendezvous for ever.
    if todo:
        loader = DataLoader(_Shard(mine), batch_size=batch_size, collate_fn=_collate, num_workers=1 if mine else 0)
        trainer.predict(TranscribeModule(transcriber, lang_override), loader, return_predictions=False)
    elapsed = time.perf_counter() - t0
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    n_failed = 0
    if trainer.is_global_zero:
        _, failed = merge_shards(out_dir)
        n_failed = len(failed)
    return PredictSummary(decoded=len(todo), skipped_done=len(utts) - len(todo), failed=n_failed, seconds=elapsed)
