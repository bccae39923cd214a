"""Language identification accuracy per locale: zero-shot vs candidate-restricted vs adapter-aware.

    python bench/lid_accuracy.py DATA --adapters BUNDLE [--model whisper-base] [--candidates el-GR,uk-UA,...]
        [--out bench/results/lid.json]

DATA is a Kaldi data dir or manifest with utt2lang (held-out voices). Each utterance is
identified three ways through the decode service (`Transcriber.identify`):

* zero-shot: the base model's most likely language among all it knows;
* candidates: the most likely language among the candidate locales' languages (default: the
  locales present in DATA, i.e. the bundle's locales plus the head locales being served);
* adapter-aware: the candidates' top-3 rescored by decoding the first 10 s with each
  candidate's own adapter (mean token log-probability).

A prediction is correct when its language equals the utterance locale's language. Writes a
JSON report and prints a Markdown table (one row per locale, plus the macro average).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="Kaldi data dir or JSONL manifest with locales")
    p.add_argument("--adapters", required=True, help="adapter bundle (tail locales)")
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--candidates", default=None, help="comma-separated candidate locales (default: DATA's locales)")
    p.add_argument("--max-per-locale", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON report path")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.decoding.service import LanguageId, Transcriber
    from asr_adapt.langtags import language_of

    utts = [u for u in load_utterances(args.data) if u.lang]
    by_loc: dict[str, list] = defaultdict(list)
    for u in sorted(utts, key=lambda u: u.utt_id):
        if args.max_per_locale is None or len(by_loc[u.lang]) < args.max_per_locale:
            by_loc[u.lang].append(u)
    utts = [u for loc in sorted(by_loc) for u in by_loc[loc]]
    cands = tuple(args.candidates.split(",")) if args.candidates else tuple(sorted(by_loc))
    service = Transcriber.load("whisper", args.model, args.adapters)
    systems = {
        "zero-shot": LanguageId(),
        "candidates": LanguageId(candidates=cands),
        "adapter-aware": LanguageId(candidates=cands, adapter_aware=True),
    }
    wavs = [u.load() for u in utts]
    correct: dict[str, dict[str, list[int]]] = {s: defaultdict(list) for s in systems}
    seconds = {}
    for name, lid in systems.items():
        service.lid = lid
        t0 = time.perf_counter()
        got = []
        for i in range(0, len(wavs), 8):
            got += service.identify(wavs[i : i + 8])
        seconds[name] = round(time.perf_counter() - t0, 1)
        for u, g in zip(utts, got):
            correct[name][u.lang].append(int(language_of(g) == language_of(u.lang)))
    locales = sorted(by_loc)
    table = {name: {loc: 100.0 * sum(c[loc]) / len(c[loc]) for loc in locales} for name, c in correct.items()}
    for name in table:
        table[name]["macro"] = sum(table[name][loc] for loc in locales) / len(locales)
    report = {"data": args.data, "adapters": args.adapters, "model": args.model, "candidates": list(cands),
              "n": {loc: len(by_loc[loc]) for loc in locales}, "accuracy_pct": table, "seconds": seconds,
              "per_utt": {name: {loc: c[loc] for loc in locales} for name, c in correct.items()}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    cols = list(systems)
    print("| locale | n | " + " | ".join(f"{c} acc %" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for loc in locales + ["macro"]:
        n = len(by_loc[loc]) if loc in by_loc else sum(len(v) for v in by_loc.values())
        print(f"| {loc} | {n} | " + " | ".join(f"{table[c][loc]:.1f}" for c in cols) + " |")
    print("| seconds |  | " + " | ".join(str(seconds[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
