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
