"""Where asr-adapt's Whisper decode spends its time, next to CTranslate2's, on one batch of features.

Same batch as ``bench/engine_speed.py`` (the first batch of 16 of a split, 10 s window, greedy,
forced language, the batch's token cap, no repetition guard). Prints:

* wall time of encoder and search for asr-adapt, and of ``Whisper.encode`` / ``generate``
  for CTranslate2 on the same features;
* decoder steps, wall time per step, and per step the time inside torch operators vs
  outside them (Python: the search loop, module calls, hooks);
* ``torch.profiler``'s top operators by self CPU time for the search.

    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_engine.py --compute-type bf16_encoder_int8_decoder \\
        --out bench/results/profile_engine.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--compute-type", default="float32")
    ap.add_argument("--ct2", default="int8", help="CTranslate2 compute type to time next to it ('' to skip)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--hf-cache", action="store_true", help="search with Hugging Face's cache (the old path)")
    ap.add_argument("--work", default="bench/out/engine_speed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import statistics

    import torch
    from engine_speed import ENGINE_OPTIONS, LOCALES, SEEDS, load_whisper_base, make_batches
    from speed_common import build_ct2_dir, synthesize

    from asr_adapt.data.audio import load_audio
    from asr_adapt.decoding import whisper_search
    from asr_adapt.decoding.options import DecodingOptions
    from asr_adapt.models.whisper import load_whisper_tokenizer
    from asr_adapt.routing import Route

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    ct2_dir = build_ct2_dir(work)
    items = synthesize(work / f"audio-{args.split}", LOCALES, 10, seed=SEEDS[args.split])
    wavs = [load_audio(it["path"]) for it in items]
    tok = load_whisper_tokenizer(ct2_dir)
    batch = make_batches(items, wavs, args.batch_size, tok)[0]
    feats = torch.from_numpy(batch.feats)
    bb = load_whisper_base(args.compute_type)
    if args.hf_cache:
        whisper_search.search_cache = lambda backbone, n, max_len: backbone.new_cache()
    opts = DecodingOptions(**ENGINE_OPTIONS)
    prompts = torch.tensor(batch.prompts)
    caps = [batch.cap] * len(batch.rows)
    route = Route.base(len(batch.rows))
    steps = {"n": 0}
    real_step = whisper_search.decoder_logits

    def counted(*a, **k):
        steps["n"] += 1
        return real_step(*a, **k)

    whisper_search.decoder_logits = counted

    def run():
        with torch.inference_mode():
            t0 = time.perf_counter()
            enc = bb.encode(feats)
            t1 = time.perf_counter()
            res = whisper_search.run_search(bb, enc, prompts, caps, opts, route)
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1, res

    run()  # warm-up
    enc_t, search_t = [], []
    for _ in range(args.repeats):
        steps["n"] = 0
        e, s, res = run()
        enc_t.append(e)
        search_t.append(s)
    n_steps = steps["n"]
    tokens = sum(len(r.tokens) for r in res)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.inference_mode():
            enc = bb.encode(feats)
    enc_ops = prof.key_averages()
    enc_cpu = sum(e.self_cpu_time_total for e in enc_ops) / 1e6
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        with torch.inference_mode():
            whisper_search.run_search(bb, enc, prompts, caps, opts, route)
        prof_wall = time.perf_counter() - t0
    ops = prof.key_averages()
    op_s = sum(e.self_cpu_time_total for e in ops) / 1e6
    rows = sorted(ops, key=lambda e: -e.self_cpu_time_total)[: args.top]
    out = {"compute_type": args.compute_type, "hf_cache": args.hf_cache, "threads": args.threads,
           "batch": len(batch.rows), "frames": int(feats.shape[-1]), "cap": batch.cap,
           "encoder_s": statistics.median(enc_t), "search_s": statistics.median(search_t),
           "decoder_calls": n_steps, "tokens": tokens, "ms_per_step": 1e3 * statistics.median(search_t) / n_steps,
           "encoder_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count}
                           for e in sorted(enc_ops, key=lambda e: -e.self_cpu_time_total)[:10]],
           "encoder_op_s": enc_cpu,
           "search_profiled_wall_s": prof_wall, "search_op_s": op_s,
           "search_outside_ops_ms_per_step": 1e3 * (prof_wall - op_s) / n_steps,
           "search_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in rows]}
    if args.ct2:
        import ctranslate2

        model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type=args.ct2,
                                           intra_threads=args.threads, inter_threads=1)
        sv = ctranslate2.StorageView.from_array(batch.feats)
        model.generate(sv, batch.prompts, beam_size=1, max_length=2 * batch.cap)
        ct_enc, ct_gen = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.encode(sv)
            t1 = time.perf_counter()
            r = model.generate(sv, batch.prompts, beam_size=1, max_length=2 * batch.cap)
            ct_gen.append(time.perf_counter() - t1)
            ct_enc.append(t1 - t0)
        out["ct2"] = {"compute_type": args.ct2, "encode_s": statistics.median(ct_enc),
                      "generate_s": statistics.median(ct_gen),
                      "tokens": sum(len(x.sequences_ids[0]) for x in r)}
        out["ct2"]["decode_s"] = out["ct2"]["generate_s"] - out["ct2"]["encode_s"]
    print(f"asr-adapt {args.compute_type}{' (HF cache)' if args.hf_cache else ''}: batch {len(batch.rows)} x "
          f"{feats.shape[-1]} frames, cap {batch.cap}")
    print(f"  encoder {out['encoder_s']:.3f} s, search {out['search_s']:.3f} s: {n_steps} decoder calls, "
          f"{tokens} tokens, {out['ms_per_step']:.2f} ms/step, of which outside torch ops "
          f"{out['search_outside_ops_ms_per_step']:.2f} ms/step (profiled)")
    if "ct2" in out:
        c = out["ct2"]
        print(f"  CT2 {args.ct2}: encode {c['encode_s']:.3f} s, generate {c['generate_s']:.3f} s "
              f"(decode = generate - encode {c['decode_s']:.3f} s), {c['tokens']} tokens")
    print("  encoder top ops:", ", ".join(f"{o['op']} {o['self_s']:.3f}s" for o in out["encoder_ops"][:6]))
    print("  search top ops (self CPU s, calls):")
    for o in out["search_ops"]:
        print(f"    {o['op']:50s} {o['self_s']:8.3f} {o['calls']:7d}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        prev = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        key = f"{args.compute_type}{'+hf_cache' if args.hf_cache else ''}@{args.threads}"
        prev[key] = out
        Path(args.out).write_text(json.dumps(prev, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
