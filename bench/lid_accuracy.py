"""Language identification accuracy per locale: zero-shot vs candidate-restricted vs adapter-aware.

    python bench/lid_accuracy.py TEST --dev DEV --adapters BUNDLE [--model whisper-base]
        [--candidates el-GR,uk-UA,...] [--out bench/results/lid.json]

TEST and DEV are Kaldi data dirs or manifests with locales (held-out voices). Each utterance is
identified three ways through the decode service (`Transcriber`):

* zero-shot: the base model's most likely language among all it knows;
* candidates: the most likely language among the candidate locales' languages (default: the
  locales present in TEST, i.e. the bundle's locales plus the head locales being served);
* adapter-aware: the candidates' top 3 rescored with ``log P_base(language) + w * mean token
  log-prob`` of decoding the first 10 s with each candidate's own adapter
  (`asr_adapt.decoding.service.pick_candidate`). ``w`` is chosen on DEV (best macro accuracy
  over a fixed grid) and only then applied to TEST.

A prediction is correct when its language equals the utterance locale's language. Writes a
JSON report (raw per-utterance scores included) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 1000.0)


def raw_scores(service, utts, candidates, batch: int = 8) -> dict:
    """Per utterance: zero-shot and candidate picks, candidate log-probs, top-k, decode scores.
    ``service`` identifies among all languages (no candidates of its own)."""
    from asr_adapt.decoding.service import restrict

    out = {"zero": [], "cands": [], "top": [], "scores": [], "logp": [], "codes": None}
    t = defaultdict(float)
    for i in range(0, len(utts), batch):
        wavs = [u.load() for u in utts[i : i + batch]]
        t0 = time.perf_counter()
        codes, logp, _ = service.language_scores(wavs)
        t["zero-shot"] += time.perf_counter() - t0
        ccodes, clogp, by_lang = restrict(codes, logp, candidates)
        out["zero"] += [codes[j] for j in logp.argmax(-1).tolist()]
        out["cands"] += [ccodes[j] for j in clogp.argmax(-1).tolist()]
        t0 = time.perf_counter()
        top, scores = service.candidate_scores(wavs, ccodes, clogp, by_lang)
        t["adapter-aware rescoring"] += time.perf_counter() - t0
        out["top"] += top
        out["scores"] += scores
        out["logp"] += clogp.tolist()
        out["codes"] = ccodes
    out["seconds"] = {k: round(v, 1) for k, v in t.items()}
    return out


def accuracy(utts, raw, weight: float | None) -> dict[str, float]:
    """Accuracy % per locale (+ macro) of zero-shot (``weight=None`` with key) or adapter-aware."""
    from asr_adapt.decoding.service import pick_candidate
    from asr_adapt.langtags import language_of

    hits: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(utts):
        g = raw["codes"][pick_candidate(torch.tensor(raw["logp"][i]), raw["top"][i], raw["scores"][i], weight)]
        hits[u.lang].append(int(language_of(g) == language_of(u.lang)))
    return _summary(hits)


def _summary(hits: dict[str, list[int]]) -> dict[str, float]:
    acc = {loc: 100.0 * sum(v) / len(v) for loc, v in sorted(hits.items())}
    acc["macro"] = sum(acc.values()) / len(acc)
    return acc


def plain_accuracy(utts, preds) -> dict[str, float]:
    from asr_adapt.langtags import language_of

    hits: dict[str, list[int]] = defaultdict(list)
    for u, g in zip(utts, preds):
        hits[u.lang].append(int(language_of(g) == language_of(u.lang)))
    return _summary(hits)


def load(path: str, max_per_locale: int | None):
    from asr_adapt.data.kaldi import load_utterances

    by_loc: dict[str, list] = defaultdict(list)
    for u in sorted((u for u in load_utterances(path) if u.lang), key=lambda u: u.utt_id):
        if max_per_locale is None or len(by_loc[u.lang]) < max_per_locale:
            by_loc[u.lang].append(u)
    return [u for loc in sorted(by_loc) for u in by_loc[loc]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("test", help="Kaldi data dir or JSONL manifest with locales (reported)")
    p.add_argument("--dev", required=True, help="data with locales on which the decode weight is chosen")
    p.add_argument("--adapters", required=True, help="adapter bundle (tail locales)")
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--candidates", default=None, help="comma-separated candidate locales (default: TEST's locales)")
    p.add_argument("--max-per-locale", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON report path")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from asr_adapt.decoding.service import Transcriber

    test, dev = load(args.test, args.max_per_locale), load(args.dev, args.max_per_locale)
    cands = tuple(args.candidates.split(",")) if args.candidates else tuple(sorted({u.lang for u in test}))
    service = Transcriber.load("whisper", args.model, args.adapters)
    raw_dev, raw_test = raw_scores(service, dev, cands), raw_scores(service, test, cands)
    sweep = {w: accuracy(dev, raw_dev, w)["macro"] for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (sweep[w], -w))  # ties: the smaller weight
    table = {
        "zero-shot": plain_accuracy(test, raw_test["zero"]),
        "candidates": plain_accuracy(test, raw_test["cands"]),
        f"adapter-aware (w={best:g}, chosen on dev)": accuracy(test, raw_test, best),
    }
    report = {"test": args.test, "dev": args.dev, "adapters": args.adapters, "model": args.model,
              "candidates": list(cands), "dev_macro_by_weight": sweep, "chosen_weight": best,
              "accuracy_pct": table, "seconds_test": raw_test["seconds"],
              "raw_test": {k: raw_test[k] for k in ("zero", "cands", "top", "scores", "codes")}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print("dev macro accuracy by decode weight: " + ", ".join(f"w={w:g}: {a:.1f}" for w, a in sweep.items()))
    cols = list(table)
    n = defaultdict(int)
    for u in test:
        n[u.lang] += 1
    print("| locale | n | " + " | ".join(f"{c} acc %" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for loc in sorted(n) + ["macro"]:
        print(f"| {loc} | {n[loc] if loc in n else len(test)} | " + " | ".join(f"{table[c][loc]:.1f}" for c in cols) + " |")
    print(f"seconds on TEST: {raw_test['seconds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
