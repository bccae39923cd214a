#!/usr/bin/env python
"""Dev error-rate curves of several training runs, one panel per locale (PNG).

Reads each run's validation history (``checkpoints/history.jsonl``, as the checkpoint merge
does), so runs that differ in one setting can be compared at equal steps, including a run
still in progress::

    python tools/plot_dev_curves.py exp_a/lda_gen0=LDA exp_b/full_gen0="full fine-tuning" -o curves.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def read_history(run: Path, metric: str) -> dict[str, list[tuple[int, float]]]:
    """{locale: [(step, rate), ...]} from the run's validation history."""
    from asr_adapt.training.ckpt_merge import METRICS, load_history

    field = METRICS[metric][0]
    curves: dict[str, list[tuple[int, float]]] = {}
    for rec in load_history(run):
        for loc, m in rec["locales"].items():
            curves.setdefault(loc, []).append((int(rec["step"]), float(m[field])))
    return curves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN[=LABEL]", help="training run dirs (holding checkpoints/)")
    p.add_argument("--metric", choices=("wer", "cer"), default="wer")
    p.add_argument("-o", "--out", required=True, help="output PNG")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for spec in args.runs:
        path, _, label = spec.partition("=")
        try:
            runs.append((label or path, read_history(Path(path), args.metric)))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    locales = sorted({loc for _, curves in runs for loc in curves})
    cols = min(4, len(locales))
    rows = math.ceil(len(locales) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, sharex=True)
    for ax, loc in zip(axes.flat, locales):
        for label, curves in runs:
            if loc in curves:
                steps, rates = zip(*sorted(curves[loc]))
                ax.plot(steps, rates, marker="o", ms=3, label=label)
        ax.set_title(loc)
        ax.set_xlabel("step")
        ax.set_ylabel(f"dev {args.metric.upper()} %")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(locales):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    from asr_adapt.fileio import atomic_open

    with atomic_open(args.out, "wb") as f:  # the project's atomic write, as plot_curves does
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
