#!/usr/bin/env python
"""Inclusive share of wall-clock samples per Python function, from a py-spy raw profile.

``py-spy record --format raw`` writes one collapsed stack per line ("f1;f2;...;fn COUNT").
This counts, for every function, the samples whose stack contains it at least once (so a
function's share includes its callees), over the stacks that pass through ``--under`` (the
training loop, so start-up and feature caching are left out):

    py-spy record -r 50 --format raw -o train.raw -- asr-adapt train fit ... --trainer.max_steps 60
    python local/pyspy_summary.py train.raw --under _FitLoop.run --top 40
"""

from __future__ import annotations

import argparse
import collections
import re


def summarise(lines, under: str) -> tuple[int, collections.Counter]:
    """(samples under ``under``, Counter function -> samples whose stack holds it)."""
    total, counts = 0, collections.Counter()
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack or under not in stack:
            continue
        total += int(n)
        # A frame reads "func (file.py:line)"; the same function at several lines counts once.
        for name in {re.sub(r" \(.*", "", f) for f in stack.split(";")}:
            counts[name] += int(n)
    return total, counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw", help="py-spy --format raw output")
    p.add_argument("--under", default="_FitLoop.run", help="only stacks through this function (default: the fit loop)")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args(argv)
    with open(args.raw, encoding="utf-8") as f:
        total, counts = summarise(f, args.under)
    if not total:
        raise SystemExit(f"no samples under {args.under!r} in {args.raw}")
    print(f"{total} samples under {args.under}")
    for name, n in counts.most_common(args.top):
        print(f"{n / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
