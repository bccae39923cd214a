"""Merge policies on a fabricated history: each picks the steps it promises."""

from __future__ import annotations

import pytest
import torch

from asr_adapt.training.ckpt_merge import assemble_state, choose

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
    import json

    from asr_adapt.training.ckpt_merge import load_histories

    for run, recs in (("gen0", HIST[:2]), ("gen1", [dict(HIST[2], step=50), dict(HIST[3], step=100)])):
        d = tmp_path / run / "checkpoints"
        d.mkdir(parents=True)
        (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    hist = load_histories([tmp_path / "gen0", tmp_path / "gen1"])
    assert [r["step"] for r in hist] == [100, 200, 250, 300]  # gen1 steps offset by gen0's last
    ch = choose(hist, "best")
    assert ch["el"].ckpts == (str(tmp_path / "gen0" / "checkpoints" / "b.ckpt"),)  # 30.0 in the teacher
    assert ch["uk"].ckpts == (str(tmp_path / "gen1" / "checkpoints" / "c.ckpt"),)  # 40.0, latest
