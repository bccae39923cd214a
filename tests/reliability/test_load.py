"""Case 6: load. A folder of many short files decodes with flat memory (streamed);
a tiny train -> merge -> decode -> score pipeline run twice with one seed gives the same WER."""

from __future__ import annotations

import json
import time

import lightning as L
import pytest
import soundfile as sf
import torch

from asr_adapt import api
from asr_adapt.cli.main import main
from asr_adapt.fileio import read_jsonl
from tests.reliability.helpers import FAST, run_measured, tone
from tests.training.helpers import make_data, tiny_whisper_dir


def _folder(root, n: int):
    root.mkdir(parents=True, exist_ok=True)
    clip = tone(0.3)
    for i in range(n):
        sub = root / f"spk{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        sf.write(sub / f"u{i:05d}.wav", clip, 16000, subtype="PCM_16")
    return root


@pytest.mark.parametrize("n,check_memory", [pytest.param(2000, True, marks=pytest.mark.slow), (200, False)])
def test_many_short_files_decode_with_flat_memory(tmp_path, tiny_model, baseline_decode, n, check_memory,
                                                  record_property):
    """Peak RSS of decoding N files vs 20 files: the difference does not grow with N (the
    job streams: audio is read one batch ahead, hypotheses go straight to hyp.jsonl).

    The memory threshold is checked in the slow suite only (a machine-dependent number); the
    default suite checks that every file is decoded exactly once and records the RSS."""
    args = ["--model", str(tiny_model), "--lang", "en", "--batch-size", "16", *FAST]
    small = baseline_decode  # 20 files, same settings
    t0 = time.perf_counter()
    big = run_measured("decode", _folder(tmp_path / "big", n), "-o", tmp_path / "o-big", *args)
    wall = time.perf_counter() - t0
    assert big.rc == 0, big.stderr[-2000:]
    recs = read_jsonl(tmp_path / "o-big" / "hyp.jsonl")
    assert len(recs) == n and len({r["utt_id"] for r in recs}) == n
    growth = big.peak_rss_mb - small.peak_rss_mb
    record_property("load", {"n": n, "peak_rss_20_mb": round(small.peak_rss_mb), "peak_rss_n_mb": round(big.peak_rss_mb),
                             "utt_per_s_incl_startup": round(n / wall, 1)})
    print(f"{n} files: peak RSS {big.peak_rss_mb:.0f} MB (20 files: {small.peak_rss_mb:.0f} MB), "
          f"{n / wall:.1f} utt/s including start-up")
    # Flat: far less than the audio of all N files would need if it were held, plus slack.
    if check_memory:
        assert growth < 60 + n * 0.01, f"peak RSS grew {growth:.0f} MB from 20 to {n} files"


def _pipeline(root, seed: int) -> tuple[dict, list[str], dict]:
    model = str(tiny_whisper_dir(root.parent / "tiny-det"))
    train = make_data(root / "train", per_locale=3)
    dev = make_data(root / "dev", per_locale=2, seed=1)
    L.seed_everything(seed)
    bundle = api.train_adapters(train, dev, ["el-GR", "uk-UA"], root / "exp", adapter="lora", adapter_conf={"rank": 2},
                                model=model, max_steps=3, val_every=3, max_batch_seconds=2.0,
                                adapter_groups=["encoder.attn"], decode={"max_new_tokens": 4, "min_window_s": 1.0},
                                gate_p=None)  # 3 steps never beat the base: keep the adapters to compare them
    assert main(["decode", str(dev), "-o", str(root / "dec"), "--model", model, "--adapters", str(bundle),
                 "--format", "jsonl", *FAST]) == 0
    assert main(["score", str(dev), str(root / "dec"), "-o", str(root / "score"), "--bootstrap", "0",
                 "--no-plots", "--name", "run"]) == 0
    summary = json.loads((root / "score" / "wer-summary-run.json").read_text(encoding="utf-8"))
    texts = [r["text"] for r in sorted(read_jsonl(root / "dec" / "hyp.jsonl"), key=lambda r: r["utt_id"])]
    from safetensors.torch import load_file

    weights = {f.name: load_file(f) for f in sorted(bundle.glob("*.safetensors"))}
    return {loc: m["pct"]["wer"] for loc, m in summary["locales"].items()}, texts, weights


def test_same_seed_gives_identical_wer(tmp_path):
    wer1, hyps1, w1 = _pipeline(tmp_path / "run1", seed=0)
    wer2, hyps2, w2 = _pipeline(tmp_path / "run2", seed=0)
    print(f"per-locale WER, run 1: {wer1}; run 2: {wer2}")
    assert set(wer1) == {"el-GR", "uk-UA"} and wer1 == wer2
    assert hyps1 == hyps2
    assert w1 and w1.keys() == w2.keys()
    for name in w1:  # the merged adapters are bit-identical
        assert w1[name].keys() == w2[name].keys()
        assert all(torch.equal(w1[name][k], w2[name][k]) for k in w1[name]), name
