#!/usr/bin/env python
"""Per-locale transducer loss (nats per output token) of a model on a data dir, streaming vs full.

Greedy CER saturates at 100 % while a young transducer still emits only blanks; the loss
keeps moving long before that, so it shows whether pretraining or adapters are learning.

  streaming:  first-pass loss with chunked attention (``--chunk-ms``, unlimited left context),
              the same attention pattern streaming decoding uses
  full:       second-pass loss with full attention in the first pass (offline decoding)

Prints a Markdown table (one row per locale, then the token-weighted mean) and writes it as
JSON to ``--json`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="Kaldi data dir with text and utt2lang")
    p.add_argument("--model", required=True, help="transducer model directory")
    p.add_argument("--adapters", default=None, help="adapter bundle (routed by each utterance's locale)")
    p.add_argument("--chunk-ms", type=int, default=320, help="first-pass chunk for the streaming loss")
    p.add_argument("--locales", nargs="+", default=None, help="only these locales")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", default=None, help="also write {locale: {streaming, full, tokens}} here")
    args = p.parse_args(argv)

    import torch

    from asr_adapt import routing
    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.decoding.transducer_search import chunk_frames
    from asr_adapt.loading import load_model

    torch.set_num_threads(1)
    model = load_model("transducer", args.model, args.adapters)
    chunk = chunk_frames(args.chunk_ms, model.config.frame_ms)
    utts = [u for u in load_utterances(args.data) if u.text and (not args.locales or u.lang in args.locales)]
    if not utts:
        print(f"error: no transcribed utterances in {args.data}", file=sys.stderr)
        return 2
    sums: dict[str, dict[str, float]] = defaultdict(lambda: {"streaming": 0.0, "full": 0.0, "tokens": 0})
    by_locale = defaultdict(list)
    for u in utts:
        by_locale[u.lang].append(u)
    with torch.inference_mode():
        for loc, group in sorted(by_locale.items()):
            for i in range(0, len(group), args.batch_size):
                batch = group[i : i + args.batch_size]
                wavs, texts, langs = [u.load() for u in batch], [u.text for u in batch], [u.lang for u in batch]
                n_tok = sum(len(model.tokenizer.encode(t)) for t in texts)
                with routing.use(langs):
                    stream = model.loss_terms(wavs, texts, langs, chunk_size=chunk, left_chunks=-1)["first_pass"]
                    full = model.loss_terms(wavs, texts, langs, chunk_size=-1, left_chunks=-1)["second_pass"]
                # loss_terms averages over utterances; undo that to sum, then normalise per token.
                sums[loc]["streaming"] += float(stream) * len(batch)
                sums[loc]["full"] += float(full) * len(batch)
                sums[loc]["tokens"] += n_tok
    table = {loc: {"streaming": s["streaming"] / s["tokens"], "full": s["full"] / s["tokens"], "tokens": s["tokens"]}
             for loc, s in sums.items()}
    tok = sum(s["tokens"] for s in sums.values())
    table["mean"] = {k: sum(s[k] for s in sums.values()) / tok for k in ("streaming", "full")} | {"tokens": tok}
    print(f"| locale | tokens | streaming ({args.chunk_ms} ms, 1st pass) | full (2nd pass) |\n|---|---|---|---|")
    for loc, r in table.items():
        print(f"| {loc} | {r['tokens']} | {r['streaming']:.3f} | {r['full']:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
