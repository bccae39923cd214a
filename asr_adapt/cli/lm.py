"""``asr-adapt lm train``: per-locale token n-gram LMs for the transducer's shallow fusion.

Counts an interpolated Witten-Bell n-gram per locale over the model's own output tokens
(its tokenizer encodes every transcript exactly as training did) from Kaldi data dirs'
``text`` and ``utt2lang``, and writes ``DIR/LOCALE.json``; `asr-adapt decode --lm DIR
--beam-size N` fuses each utterance's locale LM into beam search.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from asr_adapt.data.kaldi import read_table
    from asr_adapt.decoding.token_lm import TokenNgramLM, lm_path
    from asr_adapt.models.transducer.shipped import SHIPPED, resolve_transducer
    from asr_adapt.models.transducer.tokenizer import load_tokenizer

    model_dir = resolve_transducer(args.model)
    if not model_dir.is_dir():
        print(f"asr-adapt lm: --model {args.model}: no such model directory, nor a shipped transducer "
              f"({', '.join(SHIPPED.names())})", file=sys.stderr)
        return 1
    try:
        tok = load_tokenizer(model_dir)
    except FileNotFoundError as e:
        print(f"asr-adapt lm: {e}", file=sys.stderr)
        return 1
    texts: dict[str, list[str]] = defaultdict(list)
    for d in map(Path, args.data):
        missing = [n for n in ("text", "utt2lang") if not (d / n).is_file()]
        if missing:
            print(f"asr-adapt lm: {d}: no {' or '.join(missing)} (a Kaldi data dir with transcripts and locales)",
                  file=sys.stderr)
            return 1
        text, lang = read_table(d / "text"), read_table(d / "utt2lang")
        for utt, t in text.items():
            if utt not in lang:
                print(f"asr-adapt lm: {d}/utt2lang has no locale for {utt}", file=sys.stderr)
                return 1
            if t.strip() and (not args.locales or lang[utt] in args.locales):
                texts[lang[utt]].append(t)
    if not texts:
        print("asr-adapt lm: no transcripts for the requested locales", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    symbols = tok.pieces()
    for loc in sorted(texts):
        # Unknown characters (id 1) are dropped: the model never emits <unk> as text either.
        seqs = [[i for i in tok.encode(t) if i != 1] for t in texts[loc]]
        lm = TokenNgramLM.train((s for s in seqs if s), args.order, tok.vocab_size, symbols, loc)
        lm.save(lm_path(out, loc))
        print(f"{loc}: order {args.order}, {len(seqs)} sentences, {sum(map(len, seqs))} tokens -> {lm_path(out, loc)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("lm", help="token n-gram LMs for transducer beam search (shallow fusion)",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = p.add_subparsers(dest="lm_command", metavar="ACTION")
    t = sub.add_parser("train", help="count one n-gram LM per locale from Kaldi data dirs",
                       description="Count an interpolated Witten-Bell n-gram per locale over MODEL's output tokens "
                       "from the data dirs' text and utt2lang (training text only: an LM that has seen the "
                       "test transcripts measures nothing).")
    t.add_argument("data", nargs="+", help="Kaldi data dir(s) with text and utt2lang")
    t.add_argument("--model", required=True,
                   help="transducer model (name or directory) whose tokenizer the LM counts over")
    t.add_argument("--order", type=int, default=6, help="n-gram order in tokens (default 6: characters)")
    t.add_argument("--locales", nargs="*", default=None, help="only these locales (default: every one found)")
    t.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory: DIR/LOCALE.json")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
