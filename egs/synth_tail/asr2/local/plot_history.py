#!/usr/bin/env python
"""Dev CER per locale over a training run (history.jsonl), the exported step marked.

    python local/plot_history.py exp_gpu/pretrain/checkpoints/history.jsonl -o img/pretrain_gpu_dev_cer.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("history", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--title", default="dev CER per locale (held-out voices)")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in args.history.read_text(encoding="utf-8").splitlines() if line.strip()]
    locales = sorted({loc for r in rows for loc in r["locales"]})
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for loc in locales:
        ax.plot(steps, [r["locales"].get(loc, {}).get("cer") for r in rows], marker="o", label=loc)
    macro = [sum(m["cer"] for m in r["locales"].values()) / len(r["locales"]) for r in rows]
    best = min(range(len(rows)), key=lambda i: macro[i])
    ax.plot(steps, macro, color="black", linewidth=2, label="macro")
    ax.axvline(steps[best], color="grey", linestyle="--", label=f"exported: step {steps[best]}")
    top = ax.secondary_xaxis("top", functions=(lambda s: s, lambda s: s))
    top.set_xticks(steps[1::2], [f"{rows[i]['wall_s']:.0f}s" for i in range(1, len(rows), 2)])
    ax.set_xlabel("step (top: wall seconds)")
    ax.set_ylabel("CER %")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
