#!/usr/bin/env python3
"""Copy a pretrained transducer foundation into the package, with its provenance.

    python tools/ship_transducer.py egs/synth_tail/asr2/exp/foundation \\
        --name transducer-synth-compact --exp egs/synth_tail/asr2/exp/pretrain \\
        --command "cd egs/synth_tail/asr2 && ./run.sh --pretrain true ..." \\
        --test-table egs/synth_tail/asr2/exp/score_foundation/cer-table.md

Writes ``asr_adapt/models/transducer/pretrained/NAME/``: the weights in float16 (half the
file; loading casts back to float32), config, tokenizer, and ``foundation.json`` with the
recipe command, the data seed, the git commit, the pretraining steps and wall time, the
chosen checkpoint's dev CER per locale, and the test table if given. The name must be
registered in ``asr_adapt.models.transducer.shipped.SHIPPED``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model directory (stage 6 of egs/synth_tail/asr2)")
    p.add_argument("--name", required=True, help="registered shipped name")
    p.add_argument("--exp", type=Path, required=True, help="the pretraining experiment (history.jsonl)")
    p.add_argument("--command", required=True, help="the exact recipe command that made it")
    p.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    p.add_argument("--test-table", type=Path, help="Markdown table of test CER to record")
    p.add_argument("--parent", type=Path,
                   help="provenance (foundation.json) of the model this one was fine-tuned from, recorded as "
                        "`initialised_from` (a two-stage recipe)")
    args = p.parse_args(argv)

    import torch

    from asr_adapt.fileio import atomic_directory
    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer.shipped import SHIPPED
    from asr_adapt.training.ckpt_merge import load_history
    from asr_adapt.training.foundation import PROVENANCE_FILE, macro_cer, read_provenance

    dest = SHIPPED.get(args.name)
    model = TransducerBackbone.from_pretrained(args.model)
    history = load_history(args.exp)
    export = read_provenance(args.model)
    chosen = next((r for r in history if r["step"] == export.get("step")), history[-1])
    walls = [r["wall_s"] for r in history if "wall_s" in r]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {
        "name": args.name,
        "command": args.command,
        "data_seed": args.seed,
        "commit": commit,
        "preset_config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_dtype": "float16 (loaded as float32)",
        "pretraining": {"validations": len(history), "last_step": history[-1]["step"],
                        "wall_s": max(walls) if walls else None, "exported_step": chosen["step"]},
        "dev_cer": {loc: m["cer"] for loc, m in chosen["locales"].items()},
        "dev_cer_macro": macro_cer(chosen),
        "dev_wer": {loc: m["wer"] for loc, m in chosen["locales"].items()},
    }
    if args.parent:
        record["initialised_from"] = json.loads(args.parent.read_text(encoding="utf-8"))
    if args.test_table:
        record["test_table_md"] = args.test_table.read_text(encoding="utf-8")
    with atomic_directory(dest) as tmp:
        model.save_pretrained(tmp, dtype=torch.float16)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(f"{args.name}: {size / 1e6:.1f} MB in {dest.relative_to(ROOT)} (step {chosen['step']}, "
          f"dev CER macro {record['dev_cer_macro']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
