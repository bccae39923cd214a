"""Sharded predict: every utterance decoded exactly once across ranks, and a re-run decodes nothing.

The default test simulates two ranks in this process (two sequential ``predict`` calls
with the trainer's rank and world size patched). In real DDP both ranks read the resume
state before either writes, so the simulation freezes ``done_ids`` at its first answer for
the two calls. The slow test runs the real thing: two CPU processes under DDP (gloo),
launched by Lightning from ``bench/shard_decode.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

from asr_adapt.data.kaldi import read_data_dir
from asr_adapt.decoding.service import Transcriber
from asr_adapt.fileio import read_jsonl
from asr_adapt.training import predict as predict_mod
from tests.training.helpers import make_data, tiny_whisper_dir

ROOT = Path(__file__).resolve().parents[2]


def _backbone(tmp_path: Path):
    from asr_adapt.models.whisper import WhisperBackbone

    return WhisperBackbone.from_pretrained(str(tiny_whisper_dir(tmp_path / "tiny")))


def _ids(out: Path) -> Counter:
    return Counter(r["utt_id"] for r in read_jsonl(out / "hyp.jsonl"))


def _patch_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(L.Trainer, "global_rank", property(lambda self: rank))
    monkeypatch.setattr(L.Trainer, "world_size", property(lambda self: world))
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: rank == 0))


def test_simulated_two_ranks_decode_each_utterance_once(tmp_path, monkeypatch):
    utts = read_data_dir(make_data(tmp_path / "data", per_locale=5))  # 10 utterances
    bb = _backbone(tmp_path)
    teacher = Transcriber(bb, {"max_new_tokens": 4})
    out = tmp_path / "out"

    real_done = predict_mod.done_ids
    snapshot: dict[str, set[str]] = {}

    def frozen_done(out_dir, kind="hyp"):
        return snapshot.setdefault(kind, real_done(out_dir, kind))

    with monkeypatch.context() as m:
        m.setattr(predict_mod, "done_ids", frozen_done)
        decoded = []
        for rank in (1, 0):  # rank 0 last: it merges the shards after the (no-op) barrier
            _patch_rank(m, rank, 2)
            s = predict_mod.predict(teacher, utts, out, batch_size=3)
            decoded.append(s.decoded)
    shard_ids = [
        [r["utt_id"] for r in read_jsonl(p)] for p in sorted((out / "shards").glob("hyp.rank*.jsonl"))
    ]
    assert len(shard_ids) == 2
    assert not set(shard_ids[0]) & set(shard_ids[1]), "the two ranks decoded an utterance twice"
    counts = _ids(out)
    assert set(counts) == {u.utt_id for u in utts}
    assert max(counts.values()) == 1

    again = predict_mod.predict(teacher, utts, out, batch_size=3)  # unpatched: rank 0 of 1
    assert again.decoded == 0 and again.skipped_done == len(utts)
    assert _ids(out) == counts


def _ddp_cmd(model: Path, data: Path, out: Path, n: int) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "shard_decode.py"), "run", "--procs", "2", "--model", str(model),
            "--data", str(data), "--n", str(n), "--batch-size", "2", "--max-new-tokens", "4", "--out", str(out)]


def _ranks(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "ranks.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_ddp_processes_decode_each_utterance_once(tmp_path):
    model = tiny_whisper_dir(tmp_path / "tiny")
    data = make_data(tmp_path / "data", per_locale=5)
    out = tmp_path / "out"
    cmd = _ddp_cmd(model, data, out, 0)
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600, capture_output=True)
    ranks = _ranks(out)
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert len({r["pid"] for r in ranks}) == 2, "DDP did not launch a second process"
    counts = _ids(out)
    assert set(counts) == {u.utt_id for u in read_data_dir(data)}
    assert max(counts.values()) == 1

    # Re-run: nothing left, so no rank calls trainer.predict and no second process starts.
    subprocess.run(cmd + ["--rerun-index", "1"], check=True, cwd=ROOT, timeout=600, capture_output=True)
    rerun = _ranks(out)[2:]
    assert rerun and all(r["todo"] == 0 for r in rerun)
    assert _ids(out) == counts


@pytest.mark.slow
def test_ddp_rank_with_empty_share_still_joins(tmp_path):
    """One utterance, two processes: rank 1's share is empty but it must join the group
    (a rank that skipped trainer.predict left rank 0 waiting at the rendezvous)."""
    model = tiny_whisper_dir(tmp_path / "tiny")
    data = make_data(tmp_path / "data", per_locale=5)
    out = tmp_path / "out"
    subprocess.run(_ddp_cmd(model, data, out, 1), check=True, cwd=ROOT, timeout=600, capture_output=True)
    assert sorted(r["rank"] for r in _ranks(out)) == [0, 1]
    assert sum(_ids(out).values()) == 1
