"""The transducer recipe end to end (egs/synth_tail/asr2/run.sh) on the shipped foundation.

The default test is a tiny version of `./run.sh --quick true` (a few utterances, a few LDA
steps): every shared adaptation stage runs on the streaming transducer, head locales decode
exactly as the foundation in both modes, and stream-eval reports. The full quick recipe is
marked slow and also checks that LDA lowers every tail locale's CER.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from asr_adapt.models.transducer.shipped import SHIPPED

RECIPE = Path(__file__).resolve().parents[2] / "egs" / "synth_tail" / "asr2"

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)"),
    pytest.mark.skipif(not (SHIPPED.get("transducer-synth-compact") / "config.json").exists(),
                       reason="the shipped transducer foundation is not in this checkout"),
]


def run_recipe(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), *args],
        capture_output=True, text=True, env=env, timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def cer(exp: Path, system: str, locale: str) -> float:
    rep = json.loads((exp / "score" / f"wer-summary-{system}.json").read_text())
    return rep["locales"][locale]["pct"]["cer"]


def check_recipe(exp: Path, tail: list[str], head: list[str]) -> None:
    for mode in ("full", "streaming"):
        for loc in head:  # no adapter for head locales: decoded exactly as the foundation
            assert cer(exp, f"adapted-{mode}", loc) == cer(exp, f"zeroshot-{mode}", loc)
        adapted = json.loads((exp / "score" / f"wer-summary-adapted-{mode}.json").read_text())
        assert set(tail) <= set(adapted["locales"])
    assert (exp / "report" / "comparison.md").exists()
    assert (exp / "score" / "cer-table.md").read_text().count("|") > 10
    for sys in ("zeroshot", "adapted"):
        assert (exp / f"stream_eval_{sys}" / "stream-summary.md").exists()
    assert (exp / "lda_gen1" / "merged" / "provenance.json").exists()


TINY = ("--quick", "true", "--tail-locales", "el-GR uk-UA", "--utts-per-locale", "4", "--train-utts", "16",
        "--max-steps", "4", "--student-steps", "2", "--val-every", "2")


def test_tiny_recipe_on_the_shipped_foundation(tmp_path):
    out = run_recipe(tmp_path, *TINY)
    assert "stage 45" in out and "stage 5:" not in out  # adapts the shipped model; no pretraining
    check_recipe(tmp_path / "exp", ["el-GR", "uk-UA"], ["en-US"])


@pytest.mark.slow
def test_quick_recipe_lowers_tail_cer(tmp_path):
    run_recipe(tmp_path, "--quick", "true")
    exp = tmp_path / "exp"
    tail = ["el-GR", "uk-UA", "cs-CZ"]
    check_recipe(exp, tail, ["en-US"])
    for mode in ("full", "streaming"):
        for loc in tail:
            assert cer(exp, f"adapted-{mode}", loc) < cer(exp, f"zeroshot-{mode}", loc), (mode, loc)
