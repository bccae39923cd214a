"""The Whisper recipe end to end (egs/synth_tail/asr1/run.sh) on real whisper-base weights.

The default test is a smaller version of `make demo` (one tail locale, a few utterances,
a few steps: a few minutes on 2 CPU cores); the full quick demo is marked slow. Both check
that every stage ran, the report exists, English (no adapter) decodes exactly as the base,
and the adapted model beats zero-shot on every tail locale of the run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "egs" / "synth_tail" / "asr1"

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")


def run_recipe(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        ["bash", str(RECIPE / "run.sh"), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), *args],
        capture_output=True, text=True, env=env, timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def check_report(exp: Path, tail: list[str], head: list[str], final: str = "lda_gen1") -> None:
    adapted = json.loads((exp / "score" / "wer-summary-adapted.json").read_text())
    zeroshot = json.loads((exp / "score" / "wer-summary-zeroshot.json").read_text())
    wer = lambda rep, loc: rep["locales"][loc]["pct"]["wer"]  # noqa: E731
    # The merge gate sends a locale whose adapter did not beat the base on dev to the base.
    gate = json.loads((exp / final / "merged" / "provenance.json").read_text())["gate"]
    for loc in tail:
        if loc in gate["to_base"]:
            assert wer(adapted, loc) == wer(zeroshot, loc), f"{loc}: gated to the base but decoded differently"
        else:
            assert wer(adapted, loc) < wer(zeroshot, loc), f"{loc}: adapted {wer(adapted, loc)} >= zero-shot {wer(zeroshot, loc)}"
    for loc in head:  # no adapter for head locales: decoded exactly as the base model
        assert wer(adapted, loc) == wer(zeroshot, loc)
    assert (exp / "report" / "comparison.md").exists() and (exp / "report" / "comparison.png").exists()
    # The systems table: the macro average over the tail locales, and what each system cost.
    with (exp / "report" / "systems.csv").open(encoding="utf-8") as f:
        systems = {r["system"]: r for r in csv.DictReader(f)}
    assert float(systems["adapted"]["macro avg"]) == pytest.approx(sum(wer(adapted, loc) for loc in tail) / len(tail), abs=1e-3)
    assert systems["zeroshot"]["trainable / locale"] == "0" and systems["zeroshot"]["training time"] == "0 s"
    if set(tail) - set(gate["to_base"]):  # a bundle with every locale gated to the base has no parameters
        assert int(systems["adapted"]["trainable / locale"].replace(",", "")) > 0
    assert systems["adapted"]["training time"] != "-"  # teacher + student wall time, from their histories
    assert (exp / final / "merged" / "provenance.json").exists()
    assert (exp / final / "merged" / "dev_wer_curves.png").exists()


SMALL = (
    "--tail-locales", "el-GR", "--head-locales", "en-US", "--utts-per-locale", "6",
    "--train-utts", "24", "--tail-fraction", "1.0", "--adapters", "lda", "--max-steps", "16",
    "--val-every", "8", "--student-steps", "8", "--window", "4", "--batch-seconds", "16",
    "--compare-systems", "false", "--lda-budget", "0.004",
)


def test_small_recipe(tmp_path):
    out = run_recipe(tmp_path, *SMALL)
    assert "stage 42" in out
    exp = tmp_path / "exp"
    check_report(exp, ["el-GR"], ["en-US"])
    # --lda-budget reaches teacher and student; the final merge is the recipe's guarded one.
    for run in ("lda_gen0", "lda_gen1"):
        assert "target_fraction: 0.004" in (exp / run / "config.yaml").read_text()
        assert len(list((exp / run / "checkpoints" / "dev_utts").glob("step*.json"))) == 2
    assert json.loads((exp / "lda_gen1" / "merged" / "provenance.json").read_text())["policy"] == "best-significant"
    # Re-running a finished recipe redoes nothing (every stage has its sentinel, scoring and
    # the report included); --stage 41 --overwrite true re-runs only scoring and the report.
    again = run_recipe(tmp_path, *SMALL)
    assert "train lda" not in again and "stage 40" not in again and "stage 41" not in again and "stage 42" not in again
    again = run_recipe(tmp_path, *SMALL, "--stage", "41", "--overwrite", "true")
    assert "stage 41" in again and "stage 42" in again and "train lda" not in again and "stage 40" not in again


@pytest.mark.parametrize("adapter", ["lora", pytest.param("s2lora", marks=pytest.mark.slow)])
def test_small_recipe_with_one_other_adapter_type(tmp_path, adapter):
    """Any adapter type is a final system: its teacher, its noisy student, checkpoint-wise merge.
    (S2-LoRA runs in `make test-slow`: the default suite stays under 10 minutes.)"""
    small = [a if a != "lda" else adapter for a in SMALL]
    out = run_recipe(tmp_path, *small)
    assert "stage 42" in out and f"train {adapter}_gen1 ({adapter})" in out
    exp = tmp_path / "exp"
    check_report(exp, ["el-GR"], ["en-US"], final=f"{adapter}_gen1")
    assert f"{adapter}_gen0" in (exp / f"{adapter}_gen1" / "config.yaml").read_text()  # the student starts from its teacher


@pytest.mark.slow
def test_quick_demo(tmp_path):
    run_recipe(tmp_path, "--quick", "true")
    check_report(tmp_path / "exp", ["el-GR", "uk-UA"], ["en-US"])
