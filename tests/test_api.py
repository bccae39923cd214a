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
