"""Merge policies on a fabricated history: each picks the steps it promises."""

from __future__ import annotations

import json

import pytest
import torch

from asr_adapt.training.ckpt_merge import (
    MergeOptions,
    assemble_state,
    choose,
    load_histories,
    prob_improvement_on_dev,
    utt_errors,
)

HIST = [
    {"step": 100, "ckpt": "a.ckpt", "locales": {"el": {"wer": 50.0}, "uk": {"wer": 40.0}}},
    {"step": 200, "ckpt": "b.ckpt", "locales": {"el": {"wer": 30.0}, "uk": {"wer": 45.0}}},
    {"step": 300, "ckpt": "c.ckpt", "locales": {"el": {"wer": 36.0}, "uk": {"wer": 40.0}}},
    {"step": 400, "ckpt": "d.ckpt", "locales": {"el": {"wer": 33.0}, "uk": {"wer": 43.0}}},
]


def test_best_per_locale_ties_prefer_later_step():
    ch = choose(HIST, "best")
    assert ch["el"].steps == (200,) and ch["el"].dev_wer == 30.0
    assert ch["uk"].steps == (300,)  # 40.0 at steps 100 and 300: the later one


def test_best_macro_last_and_avg_top_k():
    assert {c.steps for c in choose(HIST, "best-macro").values()} == {(200,)}  # macro 37.5
    assert {c.steps for c in choose(HIST, "last").values()} == {(400,)}
    top = choose(HIST, "avg-top-k", k=2)
    assert top["el"].steps == (200, 400) and top["el"].dev_wer == pytest.approx(31.5)


def _with_utt_errors(tmp_path, hist, errors):
    """``hist`` with per-utterance dev errors: ``errors[step][loc]`` lists word errors per utterance
    (every utterance 10 reference words); the records' WERs are made consistent with them."""
    out = []
    for r in hist:
        utts = {loc: {"utt": [f"{loc}-{i}" for i in range(len(e))], "err": list(e), "ref": [10] * len(e)}
                for loc, e in errors[r["step"]].items()}
        path = tmp_path / f"utts{r['step']}.json"
        path.write_text(json.dumps(utts))
        locs = {loc: {"wer": 100.0 * sum(u["err"]) / sum(u["ref"])} for loc, u in utts.items()}
        out.append(dict(r, locales=locs, utt_errors=str(path)))
    return out


def test_best_significant_moves_a_locale_only_on_a_significant_dev_gain(tmp_path):
    n = 40
    errors = {
        # step 100: el much better on every utterance than at step 200 (a real peak).
        100: {"el": [1] * n, "uk": [5] * n},
        # step 200: the best macro checkpoint.
        200: {"el": [3] * n, "uk": [2] * n},
        # step 300: uk slightly better on average, but only on 2 of 40 utterances (noise).
        300: {"el": [4] * n, "uk": [2] * (n - 2) + [1, 0]},
    }
    hist = _with_utt_errors(tmp_path, HIST[:3], errors)
    assert choose(hist, "best")["uk"].steps == (300,)  # plain argmin follows the noise
    ch = choose(hist, "best-significant")
    assert ch["el"].steps == (100,) and ch["el"].p_improve == 1.0
    assert ch["uk"].steps == (200,) and ch["uk"].p_improve < 0.95  # stays on the best single checkpoint
    assert ch["uk"].dev_wer == 20.0
    # A looser threshold moves the borderline locale too.
    assert choose(hist, "best-significant", min_prob=0.05)["uk"].steps == (300,)


def test_best_significant_locale_missing_from_best_macro_takes_its_own_best(tmp_path):
    hist = _with_utt_errors(tmp_path, HIST[:2], {100: {"el": [1, 1]}, 200: {"el": [2, 2], "uk": [3, 3]}})
    ch = choose(hist, "best-significant", locales=["el", "uk"])
    # Step 100 has no uk, so step 200 is the best macro checkpoint; el beats it on every utterance.
    assert ch["uk"].steps == (200,) and ch["el"].steps == (100,) and ch["el"].p_improve == 1.0
    # No record has every locale: the best macro one lacks el, which then takes its own best.
    del hist[1]["locales"]["el"]
    assert choose(hist, "best-significant", locales=["el", "uk"])["el"].steps == (100,)


def test_best_significant_without_utterance_errors_says_what_to_do(tmp_path):
    # HIST has no per-utterance errors (trained before they were recorded).
    with pytest.raises(ValueError, match="--policy best"):
        choose(HIST, "best-significant")
    errors = {s: {"el": [1, 2], "uk": [1, 2]} for s in (100, 200)}
    hist = _with_utt_errors(tmp_path, HIST[:2], errors)
    # el's own best (step 100) is not the best macro checkpoint (step 200), so they are compared.
    hist[0]["locales"]["el"]["wer"], hist[0]["locales"]["uk"]["wer"] = 1.0, 90.0
    utts = json.loads(open(hist[0]["utt_errors"]).read())
    utts["el"]["utt"] = ["x", "y"]  # a different dev set
    open(hist[0]["utt_errors"], "w").write(json.dumps(utts))
    with pytest.raises(ValueError, match="different dev utterances"):
        choose(hist, "best-significant")


def test_unknown_policy_lists_known():
    with pytest.raises(KeyError, match="best-macro"):
        choose(HIST, "median")


def test_assemble_takes_each_locale_from_its_checkpoint(tmp_path):
    for i, name in enumerate(["a.ckpt", "b.ckpt", "c.ckpt", "d.ckpt"]):
        torch.save({"state_dict": {"el.w": torch.full((2,), float(i)), "uk.w": torch.full((2,), 10.0 + i),
                                   "shared": torch.full((2,), 100.0 + i)}}, tmp_path / name)
    keys = {"el": {"el.w"}, "uk": {"uk.w"}}
    state = assemble_state(tmp_path, choose(HIST, "best"), keys, shared_from="b.ckpt")
    assert state["el.w"].tolist() == [1.0, 1.0] and state["uk.w"].tolist() == [12.0, 12.0]
    assert state["shared"].tolist() == [101.0, 101.0]
    avg = assemble_state(tmp_path, choose(HIST, "avg-top-k", k=2), keys, shared_from="b.ckpt")
    assert avg["el.w"].tolist() == [2.0, 2.0]  # mean of steps 200 (1.0) and 400 (3.0)


def test_histories_of_generations_are_pooled(tmp_path):
    """A locale whose student never beats its teacher keeps the teacher's checkpoint."""
    for run, recs in (("gen0", HIST[:2]), ("gen1", [dict(HIST[2], step=50), dict(HIST[3], step=100)])):
        d = tmp_path / run / "checkpoints"
        d.mkdir(parents=True)
        (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    hist = load_histories([tmp_path / "gen0", tmp_path / "gen1"])
    assert [r["step"] for r in hist] == [100, 200, 250, 300]  # gen1 steps offset by gen0's last
    ch = choose(hist, "best")
    assert ch["el"].ckpts == (str(tmp_path / "gen0" / "checkpoints" / "b.ckpt"),)  # 30.0 in the teacher
    assert ch["uk"].ckpts == (str(tmp_path / "gen1" / "checkpoints" / "c.ckpt"),)  # 40.0, latest


def test_pooled_generations_find_their_own_utterance_errors(tmp_path):
    """Both runs name ``dev_utts/step0000100.json``; each record reads its own run's file."""
    for run, err in (("gen0", [1] * 30), ("gen1", [4] * 30)):
        d = tmp_path / run / "checkpoints"
        (d / "dev_utts").mkdir(parents=True)
        utts = {"el": {"utt": [f"u{i}" for i in range(30)], "err": err, "ref": [10] * 30}}
        (d / "dev_utts" / "step0000100.json").write_text(json.dumps(utts))
        rec = {"step": 100, "ckpt": "step0000100.ckpt", "utt_errors": "dev_utts/step0000100.json",
               "locales": {"el": {"wer": 10.0 * err[0]}}}
        (d / "history.jsonl").write_text(json.dumps(rec) + "\n")
    hist = load_histories([tmp_path / "gen0", tmp_path / "gen1"])
    assert [utt_errors(r, "el")["u0"] for r in hist] == [(1, 10), (4, 10)]
    assert prob_improvement_on_dev(hist[0], hist[1], "el", MergeOptions()) == 1.0


def test_metric_cer_ranks_checkpoints_by_character_errors():
    """Words can all stay wrong (WER 100) while characters improve: --metric cer sees that."""
    hist = [{"step": s, "ckpt": f"{s}.ckpt", "locales": {"el": {"wer": 100.0, "cer": c}}}
            for s, c in ((100, 60.0), (200, 40.0), (300, 45.0))]
    assert choose(hist, "best")["el"].steps == (300,)  # WER ties everywhere: the latest
    ch = choose(hist, "best", metric="cer")["el"]
    assert ch.steps == (200,) and ch.dev_wer == 40.0
    assert {c.steps for c in choose(hist, "best-macro", metric="cer").values()} == {(200,)}
    with pytest.raises(ValueError, match="metric"):
        MergeOptions(metric="per")
