"""The README's Python API flow on a tiny model: train adapters for two locales, load them,
transcribe files per locale, score."""

from __future__ import annotations

import json

from asr_adapt import api
from asr_adapt.cli.main import main as cli_main
from asr_adapt.data.kaldi import load_utterances
from tests.training.helpers import make_data, tiny_whisper_dir


def test_api_train_load_transcribe_score(tmp_path):
    model = str(tiny_whisper_dir(tmp_path / "tiny"))
    train = make_data(tmp_path / "train", per_locale=3)
    dev = make_data(tmp_path / "dev", per_locale=1, seed=1)
    bundle = api.train_adapters(train, dev, ["el-GR", "uk-UA"], tmp_path / "exp", adapter="lora",
                                adapter_conf={"rank": 2}, model=model, max_steps=2, val_every=1,
                                max_batch_seconds=4.0, decode={"max_new_tokens": 4})
    assert (bundle / "provenance.json").exists()
    # Gated as `asr-adapt merge` gates: every locale has a recorded decision against the base.
    gate = json.loads((bundle / "provenance.json").read_text())["gate"]
    assert gate["enabled"] and (bundle / "merge_report.md").exists()
    assert set(gate["locales"]) == {"el-GR", "uk-UA"}

    rec = api.load_model(model, adapters=bundle)
    utts = load_utterances(dev)
    hyps = rec.transcribe([u.audio for u in utts], lang=[u.lang for u in utts], max_new_tokens=4)
    assert len(hyps) == len(utts)
    # The API decodes exactly as the CLI does, same bundle, same options.
    out = tmp_path / "cli"
    assert cli_main(["decode", str(dev), "-o", str(out), "--model", model, "--adapters", str(bundle),
                     "--max-new-tokens", "4", "--no-progress"]) == 0
    cli = {r["utt_id"]: r["text"] for r in map(json.loads, (out / "hyp.jsonl").read_text().splitlines())}
    assert [h.text for h in hyps] == [cli[u.utt_id] for u in utts]

    report = api.score({u.utt_id: u.text for u in utts}, {u.utt_id: h.text for u, h in zip(utts, hyps)},
                       {u.utt_id: u.lang for u in utts}, bootstrap=0)
    assert set(report.locales) == {"el-GR", "uk-UA"}
    assert "el-GR" in report.to_markdown()


def test_transcribe_takes_arrays_and_dicts_like_the_pipeline(tmp_path):
    """Paths, arrays with their rate, Hugging Face-style dicts and stereo arrays give the same
    transcripts; a bare array without a rate is refused with an error naming the item."""
    import numpy as np
    import pytest
    import soundfile as sf

    from asr_adapt.data.audio import AudioError

    model = str(tiny_whisper_dir(tmp_path / "tiny"))
    data = make_data(tmp_path / "d", per_locale=2)
    utts = load_utterances(data)
    rec = api.load_model(model)
    langs = [u.lang for u in utts]
    ref = [h.text for h in rec.transcribe([u.audio for u in utts], lang=langs, max_new_tokens=4)]
    arrays = [sf.read(u.audio, dtype="float32")[0] for u in utts]
    as_arrays = rec.transcribe(arrays, lang=langs, sampling_rate=16000, max_new_tokens=4)
    as_dicts = rec.transcribe([{"array": a, "sampling_rate": 16000} for a in arrays], lang=langs, max_new_tokens=4)
    stereo = rec.transcribe([np.stack([a, a], axis=1) for a in arrays], lang=langs, sampling_rate=16000,
                            max_new_tokens=4)
    assert [h.text for h in as_arrays] == ref and [h.text for h in as_dicts] == ref and [h.text for h in stereo] == ref
    one = rec.transcribe(arrays[0], lang=langs[0], sampling_rate=16000, max_new_tokens=4)
    assert [h.text for h in one] == ref[:1]
    with pytest.raises(AudioError, match="audio item 0: a bare array needs its rate"):
        rec.transcribe(arrays[:2], lang=langs[:2])
    with pytest.raises(AudioError, match="needs 'array' and 'sampling_rate'"):
        rec.transcribe([{"array": arrays[0]}], lang=langs[:1])
    with pytest.raises(AudioError, match="zero-length"):
        rec.transcribe([np.zeros(0, dtype=np.float32)], sampling_rate=16000)
