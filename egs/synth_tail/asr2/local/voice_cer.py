#!/usr/bin/env python
"""CER per test voice, pooled over the given locales (Markdown on stdout).

The held-out voices of the synthetic corpus differ in how far they are from the training
voices (espeak-ng's ``m8`` has an equaliser no numbered training variant has), so a per-voice
view shows where a foundation's errors are. The voice is the third field of the utterance id
(``en-US-m8-r140-p65-test00000``).

    python local/voice_cer.py data/test exp_named/envelope/test_full exp_voices/envelope/test_full
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asr_adapt.scoring.metrics import align_chars
from asr_adapt.scoring.normalise import get_normaliser

HEADS = ("de-DE", "en-US", "es-ES", "fr-FR", "pl-PL", "ru-RU")


def voice_cer(refs: dict[str, str], hyps: dict[str, str], locales: set[str]) -> dict[str, float]:
    norm = get_normaliser("multilingual")
    sums: dict[str, list[int]] = {}
    for uid, ref in refs.items():
        if uid[:5] not in locales:
            continue
        counts = align_chars([norm(ref)], [norm(hyps.get(uid, ""))])[0].counts
        acc = sums.setdefault(uid.split("-")[2], [0, 0])
        acc[0] += counts.errors
        acc[1] += counts.ref
    return {v: 100.0 * e / n for v, (e, n) in sorted(sums.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="data dir with the reference text")
    p.add_argument("decodes", nargs="+", type=Path, help="decode dirs (hyp.jsonl)")
    p.add_argument("--locales", nargs="+", default=list(HEADS), help="locales pooled (default: the head locales)")
    args = p.parse_args(argv)
    refs = dict(line.rstrip("\n").split(" ", 1) for line in (args.data / "text").open(encoding="utf-8"))
    rows = {}
    for d in args.decodes:
        hyps = {}
        with (d / "hyp.jsonl").open(encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                hyps[r["utt_id"]] = r.get("text", "")
        rows[str(d)] = voice_cer(refs, hyps, set(args.locales))
    voices = sorted({v for r in rows.values() for v in r})
    print("| decode | " + " | ".join(voices) + " |")
    print("|---|" + "---|" * len(voices))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[v]:.1f}" for v in voices) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
