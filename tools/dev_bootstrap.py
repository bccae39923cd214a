"""Compare training runs on their dev sets: macro dev WER and P(better than a baseline).

Reads the per-utterance dev errors every validation stores
(``RUN/checkpoints/dev_utts/stepNNNNNNN.json``) at the step each run was merged at, and
draws paired bootstrap resamples of the dev utterances, per locale:

    python tools/dev_bootstrap.py baseline=exp_he/lda_gen0@150 \\
        augment=exp_reg_augment/lda_gen0@75 encoder_only=exp_reg_encoder_only/lda_gen0@150

The first run is the baseline. Settings are chosen on dev this way; test sets are only
scored afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def load(spec: str) -> tuple[str, dict[str, dict[str, tuple[int, int]]]]:
    """``NAME=RUN@STEP`` -> (name, {locale: {utt: (errors, reference words)}})."""
    name, rest = spec.split("=", 1)
    run, step = rest.rsplit("@", 1)
    data = json.loads((Path(run) / "checkpoints" / "dev_utts" / f"step{int(step):07d}.json").read_text())
    return name, {loc: {u: (e, r) for u, e, r in zip(v["utt"], v["err"], v["ref"])} for loc, v in data.items()}


def macro(run: dict, picks: dict[str, list[str]]) -> float:
    rates = []
    for loc, utts in picks.items():
        e = sum(run[loc][u][0] for u in utts)
        r = sum(run[loc][u][1] for u in utts)
        rates.append(100.0 * e / max(r, 1))
    return float(np.mean(rates))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN@STEP", help="the first is the baseline")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    runs = dict(load(s) for s in args.runs)
    base_name = next(iter(runs))
    base = runs[base_name]
    utts = {loc: sorted(u) for loc, u in base.items()}
    rng = np.random.default_rng(args.seed)
    draws = [{loc: [us[i] for i in rng.integers(0, len(us), len(us))] for loc, us in utts.items()}
             for _ in range(args.n_boot)]
    base_draws = np.array([macro(base, d) for d in draws])
    print(f"| run | dev macro WER | P(better than {base_name}) |\n|---|---|---|")
    for name, run in runs.items():
        p = "-" if name == base_name else f"{np.mean(np.array([macro(run, d) for d in draws]) < base_draws):.3f}"
        print(f"| {name} | {macro(run, utts):.2f} | {p} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
