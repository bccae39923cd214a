#!/usr/bin/env python3
"""Curves of plateau-study runs: dev loss, greedy CER (full / streaming / CTC) and joiner tanh'.

Usage: python local/plot_study.py exp/study/A_ctc_only exp/study/B_rnnt ... -o exp/study/curves.png
Each run directory holds ``log.jsonl`` from ``local/plateau_study.py``; a Markdown table of the
last record of every run is printed as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--x", choices=["step", "minutes"], default="step")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("dev_loss", "dev loss per utterance"), ("cer_full", "dev CER %, 2nd pass (full)"),
              ("cer_stream320", "dev CER %, 1st pass (320 ms)"), ("cer_ctc", "dev CER %, CTC head"),
              ("tanh_grad", "joiner mean tanh' (0.76 fresh)"), ("nonblank", "emitted / reference tokens")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    rows = []
    for i, run in enumerate(args.runs):
        recs = load(run)
        meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
        # A CTC-only run never trains its joiner: its transducer panels would show noise.
        ctc_only = meta.get("args", {}).get("rnnt_weight", 1.0) == 0
        for ax, (key, title) in zip(axes.flat, panels):
            if ctc_only and key in ("cer_full", "cer_stream320", "tanh_grad", "nonblank"):
                continue
            pts = [(r[args.x], r[key]) for r in recs if key in r and r[key] == r[key]]  # skip NaN
            if pts:
                ax.plot(*zip(*pts), marker=".", color=f"C{i}", label=run.name)
            ax.set_title(title)
            ax.set_xlabel(args.x)
        last = recs[-1]

        def cell(key, fmt=".1f", last=last, ctc_only=ctc_only):
            v = last.get(key, float("nan"))
            return "-" if v != v or (ctc_only and key != "cer_ctc") else format(v, fmt)

        rows.append(f"| {run.name} | {last['step']} | {last['minutes']:.1f} | {last['dev_loss']:.1f} | "
                    f"{cell('cer_full')} | {cell('cer_stream320')} | {cell('cer_ctc')} | {cell('tanh_grad', '.2f')} |")
    for ax, (key, _) in zip(axes.flat, panels):
        if key.startswith("cer"):
            ax.set_ylim(0, 110)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print("| run | step | minutes | dev loss | CER full | CER 320 ms | CER CTC | tanh' |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
