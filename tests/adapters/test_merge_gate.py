"""`asr-adapt merge`'s base gate on a hand-made experiment: a tiny Whisper with LDA adapters,
two validations whose per-utterance dev errors are written here, and a base-model decode
of the same dev set whose hypotheses carry a known number of word errors.

Expected values are worked out by hand:

* el-GR: adapter 2 errors in each of 20 ten-word utterances (20 %), base 6 (60 %): the adapter
  is better on every utterance, so every resample favours it, P = 1: kept.
* uk-UA: base 5 errors everywhere (50 %); the adapter 5 except 4 on two utterances (49 %). A
  resample favours the adapter iff it draws one of those two: P = 1 - (18/20)^20 = 0.878,
  below 0.95: gated to the base, above 0.8: kept with ``--gate-p 0.8``.
* five of uk-UA's dev utterances are by a speaker who is also in the training data.
"""

from __future__ import annotations

import json

import pytest

from asr_adapt.adapters import adapter_locales, read_meta, resolve_locale
from asr_adapt.cli.main import main
from asr_adapt.data.kaldi import write_data_dir
from asr_adapt.data.types import Utterance
from asr_adapt.fileio import atomic_write_json
from tests.training.helpers import make_data, tiny_whisper_dir

LOCALES = ("el-GR", "uk-UA")
N = 20
REF = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
# Word errors per dev utterance at the best validation (step 4) and in the base decode.
ADAPTER = {"el-GR": [2] * N, "uk-UA": [5] * (N - 2) + [4, 4]}
BASE = {"el-GR": 6, "uk-UA": 5}
P_UK = 1 - (18 / 20) ** 20  # 0.878


def _utt(loc: str, i: int) -> str:
    return f"{loc}-dev{i % 4}-u{i:02d}"


def _hyp(errors: int) -> str:
    """REF with its first ``errors`` words substituted."""
    words = REF.split()
    return " ".join(["zulu"] * errors + words[errors:])


def _write_config(exp, model, train, dev) -> None:
    import yaml

    exp.mkdir(parents=True)
    cfg = {"model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                     "init_args": {"model": str(model), "adapter": "lda", "locales": list(LOCALES),
                                   "adapter_groups": ["encoder"], "decode": {"max_new_tokens": 4}}},
           "data": {"train": [str(train)], "dev": [str(dev)]}}
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    import torch

    from asr_adapt.training.bundle import build_from_experiment

    root = tmp_path_factory.mktemp("gate")
    model = tiny_whisper_dir(root / "tiny")
    # Data dirs for the speaker check only (nothing reads their audio): uk-UA's dev speaker 0 trains too.
    dev_utts = [Utterance(_utt(loc, i), f"/none/{_utt(loc, i)}.wav", REF, loc, _utt(loc, i).rsplit("-", 1)[0], 1.0)
                for loc in LOCALES for i in range(N)]
    train_utts = [Utterance(f"{loc}-train-u{i}", f"/none/t{i}.wav", REF, loc, f"{loc}-train{i % 2}", 1.0)
                  for loc in LOCALES for i in range(4)]
    train_utts.append(Utterance("uk-UA-dev0-t", "/none/t.wav", REF, "uk-UA", "uk-UA-dev0", 1.0))
    write_data_dir(root / "dev", dev_utts)
    write_data_dir(root / "train", train_utts)
    exp = root / "exp"
    _write_config(exp, model, root / "train", root / "dev")
    ckpts = exp / "checkpoints"
    (ckpts / "dev_utts").mkdir(parents=True)
    state = build_from_experiment(exp, init_adapters=None).state_dict()
    hist = []
    for step, extra in ((2, 3), (4, 0)):  # step 2: three more errors per utterance than step 4
        errs = {loc: [e + extra for e in ADAPTER[loc]] for loc in LOCALES}
        name = f"step{step:07d}"
        torch.save({"state_dict": state}, ckpts / f"{name}.ckpt")
        atomic_write_json(ckpts / "dev_utts" / f"{name}.json",
                          {loc: {"utt": [_utt(loc, i) for i in range(N)], "err": errs[loc], "ref": [10] * N}
                           for loc in LOCALES})
        hist.append({"step": step, "ckpt": f"{name}.ckpt", "utt_errors": f"dev_utts/{name}.json",
                     "locales": {loc: {"wer": 100.0 * sum(errs[loc]) / (10 * N), "n": N} for loc in LOCALES}})
    (ckpts / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hist), encoding="utf-8")
    base = root / "decode_base_dev"
    base.mkdir()
    (base / "hyp.jsonl").write_text("".join(
        json.dumps({"utt_id": _utt(loc, i), "text": _hyp(BASE[loc]), "ref": REF, "lang": loc}) + "\n"
        for loc in LOCALES for i in range(N)), encoding="utf-8")
    return root


def _merge(root, name, *args):
    out = root / name
    assert main(["merge", str(root / "exp"), "-o", str(out), "--policy", "best", *args]) == 0
    return out, read_meta(out), json.loads((out / "provenance.json").read_text(encoding="utf-8"))


def test_gate_keeps_only_adapters_that_beat_the_base(exp, capsys):
    out, meta, prov = _merge(exp, "gated", "--base-dev", str(exp / "decode_base_dev"))
    # The bundle: el-GR's adapter only; uk-UA's file and entry are gone.
    assert set(meta["sets"]["lda"]["locales"]) == {"el-GR"}
    assert (out / "lda.el-GR.safetensors").is_file() and not (out / "lda.uk-UA.safetensors").exists()
    assert meta["gate"]["enabled"] and meta["gate"]["to_base"] == ["uk-UA"] and meta["gate"]["min_prob"] == 0.95
    gate = prov["gate"]["locales"]
    assert prov["gate"] == meta["gate"]
    assert gate["el-GR"] == {"locale": "el-GR", "keep": True, "p_improve": 1.0, "adapter_rate": 20.0,
                             "base_rate": 60.0, "n_utts": N, "seen_speaker_utts": 0, "served_by": "el-GR"}
    uk = gate["uk-UA"]
    assert not uk["keep"] and uk["served_by"] == "base" and uk["seen_speaker_utts"] == 5
    assert (uk["adapter_rate"], uk["base_rate"]) == (49.0, 50.0)
    assert uk["p_improve"] == pytest.approx(P_UK, abs=0.04)
    # The checkpoint choice itself is still recorded for both (step 4: fewer errors than step 2).
    assert {loc: c["steps"] for loc, c in prov["locales"].items()} == {"el-GR": [4], "uk-UA": [4]}
    base_errors = json.loads((out / "base_dev_utts.json").read_text(encoding="utf-8"))
    assert base_errors["uk-UA"]["err"] == [5] * N and base_errors["el-GR"]["ref"] == [10] * N
    report = (out / "merge_report.md").read_text(encoding="utf-8")
    assert "| uk-UA | 4 | 49.00 | 50.00 |" in report and "**base model**" in report
    assert "| el-GR | 4 | 20.00 | 60.00 | 1.000 | 20 (0) | adapter |" in report
    assert "Adapters removed (not better than the base): uk-UA." in report
    assert "uk-UA" in capsys.readouterr().out
    # Served: the bundle loads with el-GR only, and uk-UA rows find no adapter (the base decodes them).
    from asr_adapt.loading import load_model

    loaded = adapter_locales(load_model("whisper", str(exp / "tiny"), str(out)))
    assert set(loaded) == {"el-GR"} and resolve_locale("uk-UA", loaded) is None


def test_gate_threshold(exp):
    _, meta, prov = _merge(exp, "gated_p08", "--base-dev", str(exp / "decode_base_dev"), "--gate-p", "0.8")
    assert set(meta["sets"]["lda"]["locales"]) == {"el-GR", "uk-UA"} and meta["gate"]["to_base"] == []
    assert prov["gate"]["locales"]["uk-UA"]["keep"] and prov["gate"]["min_prob"] == 0.8
    with pytest.raises(SystemExit, match="gate-p"):
        main(["merge", str(exp / "exp"), "-o", str(exp / "bad"), "--gate-p", "1.5"])


def test_no_gate_keeps_every_locale(exp):
    out, meta, prov = _merge(exp, "ungated", "--no-gate")
    assert set(meta["sets"]["lda"]["locales"]) == {"el-GR", "uk-UA"}
    assert meta["gate"] == prov["gate"] == {"enabled": False, "to_base": []}
    assert not (out / "base_dev_utts.json").exists() and not (out / "base_dev").exists()
    assert "Not gated" in (out / "merge_report.md").read_text(encoding="utf-8")


def _base_decode_like(exp, name, edit):
    """A copy of the base decode with ``edit(records)`` applied."""
    recs = [json.loads(line) for line in (exp / "decode_base_dev" / "hyp.jsonl").read_text(encoding="utf-8").splitlines()]
    d = exp / name
    d.mkdir()
    (d / "hyp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(recs)), encoding="utf-8")
    return d


def test_gate_refuses_what_it_cannot_pair(exp):
    out = exp / "refused"
    # The first el-GR utterance is missing and its audio does not exist to decode it: refused, nothing written.
    partial = _base_decode_like(exp, "decode_partial", lambda recs: recs[1:])
    with pytest.raises(SystemExit, match="1 dev utterances could not be decoded"):
        main(["merge", str(exp / "exp"), "-o", str(out), "--base-dev", str(partial)])
    assert not out.exists()
    # A base decode scored against other references (one word short) is not a paired comparison.
    other = _base_decode_like(exp, "decode_other_refs",
                              lambda recs: [dict(recs[0], ref=REF.rsplit(" ", 1)[0])] + recs[1:])
    with pytest.raises(SystemExit, match="different dev utterances or references"):
        main(["merge", str(exp / "exp"), "-o", str(out), "--base-dev", str(other)])
    # avg-top-k averages checkpoints that were never validated together: nothing to gate it by.
    with pytest.raises(SystemExit, match="avg-top-k"):
        main(["merge", str(exp / "exp"), "-o", str(out), "--policy", "avg-top-k", "-k", "2",
              "--base-dev", str(exp / "decode_base_dev")])
    assert not out.exists()


def test_base_dev_decodes_only_missing_utterances(exp):
    """Without a complete base decode, the gate decodes the missing dev utterances with the base model."""
    from asr_adapt.fileio import read_jsonl
    from asr_adapt.training.gate import decode_base_dev

    dev = make_data(exp / "dev_audio", per_locale=1)
    run = exp / "exp_audio"
    _write_config(run, exp / "tiny", dev, dev)
    wanted = {"el-GR-s0-u000"}
    assert decode_base_dev([run], wanted, exp / "dec") == 1
    recs = read_jsonl(exp / "dec" / "hyp.jsonl")
    assert [r["utt_id"] for r in recs] == ["el-GR-s0-u000"] and recs[0]["ref"]
    assert decode_base_dev([run], wanted, exp / "dec") == 0  # already there: reused
