"""How good were a noisy-student generation's pseudo-labels? Per-locale WER against the
synthetic corpus's hidden transcripts, for every hypothesis and for the ones the filters kept.

``asr-adapt synth`` writes the unlabelled split's transcripts to ``UNLABELLED/.text_hidden``
(training never reads them); ``asr-adapt pseudo-label`` writes every hypothesis to
``PL/hyp.jsonl`` and the kept ones to ``PL/data/text``:

    python tools/pseudo_label_wer.py data_r300_pool/unlabelled exp_r300_nst/pl_gen1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asr_adapt.scoring.engine import dev_wer


def read_text(path: Path) -> dict[str, str]:
    """Kaldi ``text``: ``utt words...`` per line (an empty transcript is allowed)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        utt, _, words = line.partition(" ")
        out[utt] = words
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("unlabelled", type=Path, help="the synthetic unlabelled data dir (has .text_hidden)")
    p.add_argument("pl", type=Path, help="a pseudo-label output dir (hyp.jsonl, data/text)")
    args = p.parse_args(argv)
    refs = read_text(args.unlabelled / ".text_hidden")
    langs = dict(line.split(" ", 1) for line in (args.unlabelled / "utt2lang").read_text(encoding="utf-8").split("\n") if line)
    with open(args.pl / "hyp.jsonl", encoding="utf-8") as f:
        every = {r["utt_id"]: r["text"] for r in map(json.loads, f)}
    kept = read_text(args.pl / "data" / "text")
    rows = {name: dev_wer({u: refs[u] for u in hyps}, hyps, langs) for name, hyps in (("all", every), ("kept", kept))}
    locales = [k for k in rows["all"] if k not in ("macro", "pooled")] + ["macro", "pooled"]
    print("| locale | WER, all hypotheses | WER, kept |")
    print("|---|---|---|")
    for loc in locales:
        print(f"| {loc} | {rows['all'][loc]:.1f} | {rows['kept'].get(loc, float('nan')):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
