"""Compare Whisper streaming policies from one ``stream-eval`` output directory.

For every operating point (``stream-whisper-<label>.jsonl``) against a baseline label:
compute per second of audio (model wall time / audio, one thread as stream-eval ran it),
WER with the paired bootstrap of the difference to the baseline (95 % interval and
P(worse)), and the delay of correctly committed words after their reference end (the
``ref-delay`` of stream-eval's summary: comparable across policies, unlike each policy's
own notion of when the model had a word).

    asr-adapt stream-eval data/test -o OUT --backbone whisper --model whisper-base \\
        --adapters BUNDLE --policy local-agreement,alignatt --step-ms 1000,2000 --max-utts 10 --threads 1
    python bench/stream_policies.py OUT --baseline step1000-la2 --out bench/results/stream_policies.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jiwer
import numpy as np

from asr_adapt.decoding.streaming_summary import load_summary
from asr_adapt.fileio import read_jsonl
from asr_adapt.scoring import get_normaliser
from asr_adapt.scoring.bootstrap import locale_rng, percentile_ci, rates, resample_sums


def per_utt(path: Path, norm) -> dict[str, tuple[int, int, float, float]]:
    """utt_id -> (errors, reference words, processing s, duration s)."""
    out = {}
    for r in read_jsonl(path):
        ref, hyp = norm(r["ref"]), norm(r["text"])
        n = len(ref.split())
        errs = jiwer.process_words(ref, hyp) if ref.strip() else None
        e = (errs.substitutions + errs.deletions + errs.insertions) if errs else len(hyp.split())
        out[r["utt_id"]] = (e, n, r["processing_s"], r["duration"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--baseline", default="step1000-la2")
    ap.add_argument("--n-boot", type=int, default=10000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    d = Path(args.dir)
    norm = get_normaliser("multilingual")
    files = {p.stem.removeprefix("stream-whisper-"): p for p in sorted(d.glob("stream-whisper-*.jsonl"))}
    if args.baseline not in files:
        raise SystemExit(f"no stream-whisper-{args.baseline}.jsonl in {d}")
    data = {k: per_utt(p, norm) for k, p in files.items()}
    summary = {r["label"]: r for r in load_summary(d) if r["locale"] == "all"}
    base = data[args.baseline]
    rows = []
    for label, utts in data.items():
        ids = sorted(set(utts) & set(base))
        e = np.array([utts[u][0] for u in ids], dtype=float)
        b = np.array([base[u][0] for u in ids], dtype=float)
        n = np.array([base[u][1] for u in ids], dtype=float)
        rs = resample_sums([e, b], n, args.n_boot, locale_rng(0, label))
        diff = rates(rs.errors[0], rs.ref) - rates(rs.errors[1], rs.ref)
        lo, hi = percentile_ci(diff)
        compute = sum(utts[u][2] for u in ids) / sum(utts[u][3] for u in ids)
        base_compute = sum(base[u][2] for u in ids) / sum(base[u][3] for u in ids)
        s = summary.get(label, {})
        rows.append({
            "label": label, "utts": len(ids), "wer": round(100 * e.sum() / n.sum(), 1),
            "delta_wer": round(100 * (e.sum() - b.sum()) / n.sum(), 1), "delta_ci95": [round(lo, 1), round(hi, 1)],
            "p_worse": round(float(np.mean(diff > 0)), 3),
            "compute_per_audio_s": round(compute, 3), "compute_vs_baseline": round(compute / base_compute, 2),
            "ref_delay_p50_ms": s.get("ref_delay_p50_ms"), "ref_delay_p90_ms": s.get("ref_delay_p90_ms"),
            "first_token_p50_ms": s.get("first_token_p50_ms"),
        })
    head = "| point | utts | WER | Δ vs " + args.baseline + " [95 % CI] | P(worse) | compute / audio s | vs baseline | ref-delay p50/p90 ms |"
    print(head)
    print("|" + "---|" * 8)
    for r in rows:
        print(f"| {r['label']} | {r['utts']} | {r['wer']} | {r['delta_wer']:+} [{r['delta_ci95'][0]:+}, "
              f"{r['delta_ci95'][1]:+}] | {r['p_worse']} | {r['compute_per_audio_s']} | {r['compute_vs_baseline']}x | "
              f"{_ms(r['ref_delay_p50_ms'])} / {_ms(r['ref_delay_p90_ms'])} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"dir": str(d), "baseline": args.baseline, "rows": rows}, indent=1))
    return 0


def _ms(x) -> str:
    return "-" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    sys.exit(main())
