"""Sharded decoding (pseudo-labelling) over CPU processes with Lightning's predict loop under DDP.

Three modes:

* ``run``: one call of :func:`asr_adapt.training.predict.predict` with ``--procs`` CPU
  processes (``strategy="ddp"``, gloo). With ``--procs 2`` Lightning re-launches *this
  script* for rank 1 (its subprocess-script launcher), so everything up to ``predict``
  runs in both processes. Each rank appends ``{pid, rank, world, decoded, seconds}`` to
  ``OUT/ranks.jsonl``; rank 0 then checks that every utterance is in ``hyp.jsonl`` exactly
  once and writes ``OUT/summary.json``.
* ``compare``: ``run`` with 1 and 2 processes, alternated (1, 2, 1, 2, ...) on fresh
  output dirs, so both see the same load, one torch thread per process (``--threads``);
  reports utterances/s (decode loop only, the slowest rank) and end to end (including the
  second process's start-up and model load).
* ``threads``: ``torch.set_num_threads`` 1 vs 2 on the same decode batches, interleaved
  batch by batch, in one process.

    python bench/shard_decode.py compare --n 32 --rounds 2
    python bench/shard_decode.py threads --n 16 --batch-size 8 --rounds 2
    python bench/shard_decode.py run --procs 2 --out bench/out/shard_decode/run2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from asr_adapt.decoding.decoders import decoding_options, transcribe_batch

DEFAULT_DATA = "bench/out/train_speed/data/dev"


def load_utts(data: str, n: int):
    from asr_adapt.data.kaldi import read_data_dir

    utts = sorted(read_data_dir(data), key=lambda u: u.utt_id)
    return utts[:n] if n else utts


def check_exactly_once(out_dir: Path, utts) -> dict:
    """Counts of utterance ids in hyp.jsonl: duplicates, missing, unexpected."""
    from asr_adapt.fileio import read_jsonl

    counts = Counter(r["utt_id"] for r in read_jsonl(out_dir / "hyp.jsonl"))
    want = {u.utt_id for u in utts}
    return {
        "lines": sum(counts.values()),
        "duplicates": sorted(k for k, c in counts.items() if c > 1),
        "missing": sorted(want - set(counts)),
        "unexpected": sorted(set(counts) - want),
    }


def run(args) -> int:
    """One sharded predict; safe to be re-executed by the DDP launcher as rank 1."""
    import torch

    from asr_adapt.models.whisper import WhisperBackbone
    from asr_adapt.training.predict import predict

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    utts = load_utts(args.data, args.n)
    bb = WhisperBackbone.from_pretrained(args.model)
    from asr_adapt.decoding.service import Transcriber

    teacher = Transcriber(bb, {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})
    kw = {"accelerator": "cpu", "devices": args.procs}
    if args.procs > 1:
        kw["strategy"] = "ddp"
    t0 = time.perf_counter()
    summary = predict(teacher, utts, out, batch_size=args.batch_size, trainer_kwargs=kw)
    wall = time.perf_counter() - t0
    rank = int(os.environ.get("LOCAL_RANK", "0"))  # set by Lightning in re-launched ranks
    rec = {"pid": os.getpid(), "rank": rank, "world": args.procs, "todo": summary.decoded,
           "skipped": summary.skipped_done, "seconds": summary.seconds, "threads": torch.get_num_threads()}
    with open(out / "ranks.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    if rank == 0:
        # Give the other rank time to append its record (it leaves predict() at the barrier too).
        deadline = time.time() + 30
        while time.time() < deadline and len((out / "ranks.jsonl").read_text().splitlines()) < args.procs * (1 + args.rerun_index):
            time.sleep(0.2)
        check = check_exactly_once(out, utts)
        res = {"procs": args.procs, "n": len(utts), "wall_s": wall, "check": check, "summary": rec}
        (out / f"summary{args.rerun_index}.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
    return 0


def _run_sub(args, procs: int, out: Path, rerun_index: int = 0) -> dict:
    cmd = [sys.executable, __file__, "run", "--procs", str(procs), "--out", str(out), "--n", str(args.n),
           "--data", args.data, "--model", args.model, "--batch-size", str(args.batch_size),
           "--rerun-index", str(rerun_index), "--threads", str(args.threads or 1)]
    if args.max_new_tokens:
        cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    res = json.loads((out / f"summary{rerun_index}.json").read_text())
    ranks = [json.loads(x) for x in (out / "ranks.jsonl").read_text().splitlines()]
    res["ranks"] = ranks
    # Decode time per rank = sum of its hypotheses' per-utterance seconds (batch time / batch
    # size, measured around transcribe_batch); the slowest rank bounds the sharded run.
    from asr_adapt.fileio import read_jsonl

    per_rank = [sum(h["seconds"] for h in read_jsonl(p)) for p in sorted((out / "shards").glob("hyp.rank*.jsonl"))]
    res["decode_s"] = max(per_rank)
    res["decode_s_per_rank"] = per_rank
    res["process_s"] = total
    return res


def compare(args) -> int:
    base = Path(args.out)
    rows: dict[int, list[dict]] = {1: [], 2: []}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
            out = base / f"r{r}-p{procs}"
            shutil.rmtree(out, ignore_errors=True)
            res = _run_sub(args, procs, out)
            if procs == 2:  # a re-run must decode nothing (and then starts no second process)
                before = len(res["ranks"])
                again = _run_sub(args, procs, out, rerun_index=1)
                res["rerun_todo"] = [x["todo"] for x in again["ranks"][before:]]
            rows[procs].append(res)
            loads.append(os.getloadavg()[0])
            print(f"round {r} procs {procs}: decode {res['decode_s']:.1f} s, process {res['process_s']:.1f} s, "
                  f"pids {sorted({x['pid'] for x in res['ranks']})}, check {res['check']}, load {loads[-1]:.1f}",
                  file=sys.stderr, flush=True)
    (base / "compare.json").write_text(json.dumps({"rows": rows, "loads": loads, "args": vars(args)}, indent=1))
    n = rows[1][0]["n"]
    print(f"{n} utterances, {args.rounds} round(s) alternating 1/2 processes; load {min(loads):.1f}-{max(loads):.1f}\n")
    print("| processes | decode s (slowest rank) | utt/s decode | end-to-end s | utt/s end-to-end | exactly once |")
    print("|---|---|---|---|---|---|")
    for procs in (1, 2):
        d = sum(x["decode_s"] for x in rows[procs])
        e = sum(x["process_s"] for x in rows[procs])
        ok = all(not (x["check"]["duplicates"] or x["check"]["missing"]) for x in rows[procs])
        k = len(rows[procs])
        print(f"| {procs} | {d / k:.1f} | {n * k / d:.3f} | {e / k:.1f} | {n * k / e:.3f} | {'yes' if ok else 'NO'} |")
    return 0


def threads(args) -> int:
    """1 vs 2 torch threads on the same decode batches, interleaved per batch."""
    import torch

    from asr_adapt.models.whisper import WhisperBackbone

    utts = load_utts(args.data, args.n)
    wavs = [u.load() for u in utts]
    langs = [u.lang for u in utts]
    bb = WhisperBackbone.from_pretrained(args.model)
    opts = decoding_options(bb)
    order = sorted(range(len(utts)), key=lambda i: -len(wavs[i]))
    transcribe_batch(bb, [wavs[order[0]]], [langs[order[0]]], opts, route=None)  # warm-up
    wall = {1: 0.0, 2: 0.0}
    loads = [os.getloadavg()[0]]
    k = 0
    for _ in range(args.rounds):
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            for t in ((1, 2) if k % 2 == 0 else (2, 1)):
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    transcribe_batch(bb, [wavs[i] for i in idx], [langs[i] for i in idx], opts, route=None)
                wall[t] += time.perf_counter() - t0
            k += 1
            loads.append(os.getloadavg()[0])
    print(f"{len(utts)} utterances x {args.rounds} round(s), batch {args.batch_size}, interleaved per batch; "
          f"load {min(loads):.1f}-{max(loads):.1f}: 1 thread {wall[1]:.1f} s, 2 threads {wall[2]:.1f} s, "
          f"2 vs 1 speed {wall[1] / wall[2]:.2f}x")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "threads.json").write_text(json.dumps({"wall": wall, "loads": loads, "args": vars(args)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("run", "compare", "threads"))
    ap.add_argument("--data", default=DEFAULT_DATA, help="Kaldi data dir (made by asr-adapt synth)")
    ap.add_argument("--n", type=int, default=32, help="utterances (0: all)")
    ap.add_argument("--model", default="whisper-base", help="model name or HF dir")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0,
                    help="run: torch threads per process (0: Lightning's choice); compare: passed on, 0 means 1")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="cap tokens per clip (0: default options)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rerun-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="bench/out/shard_decode")
    args = ap.parse_args(argv)
    return {"run": run, "compare": compare, "threads": threads}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
