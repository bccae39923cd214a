"""Window policies and end-to-end pipelines: asr-adapt vs faster-whisper vs the transformers pipeline.

The same short utterances (espeak-ng speech, several locales) and the same whisper-base
weights go through every system in one run on one machine; the table reports wall time,
RTF, WER per locale, and time relative to the CTranslate2 engine int8
(``ctranslate2.models.Whisper.generate``) on the same features, batches and token caps as the
asr-adapt 10 s-window system (``bench/engine_speed.py``'s ``CT2Engine``). Model loading and audio
reading are not timed; feature extraction and decoding are (the CT2 engine gets its features
precomputed).

Each system runs once, one after another: use this script for WER and for comparing window
policies. Speed claims come from ``bench/engine_speed.py`` (systems interleaved, >= 5
repetitions, median ratio and spread, settings chosen on a dev split).

    python bench/decode_speed.py --n-per-locale 10 --locales en,de,es,fr
    python bench/decode_speed.py --device cuda        # where a GPU is available

Systems: asr-adapt dynamic length with a 10 s and a 1 s minimum window (batch padded to its
longest clip rounded up to 1 s; repetition guard + full-context fallback on), the 10 s one
again with the int8 and bfloat16 compute types (CPU), asr-adapt at the stock 30 s context,
faster-whisper int8 as users run it (``WhisperModel.transcribe`` per clip with its defaults,
temperature fallback included, except ``beam_size=1`` and a ``max_new_tokens`` matching
asr-adapt's cap; and ``BatchedInferencePipeline`` with batch 16), and the transformers ASR
pipeline (forced language, greedy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine_speed import Context, CT2Engine, FasterWhisperBatched, FasterWhisperSequential, make_batches
from speed_common import build_ct2_dir, normalise, synthesize

from asr_adapt.decoding.decoders import decoding_options, transcribe_batch


def run_asr_adapt(items, wavs, device, batch_size, compute_type="float32", **overrides) -> tuple[list[str], float]:
    import torch

    from asr_adapt.models.whisper import WhisperBackbone

    bb = WhisperBackbone.from_pretrained("whisper-base", device=device)
    bb.set_compute_type(compute_type)  # untimed, like loading: it happens once per process
    opts = decoding_options(bb, **overrides)
    order = sorted(range(len(items)), key=lambda i: -len(wavs[i]))
    transcribe_batch(bb, [wavs[order[0]]], [items[order[0]]["lang"]], opts, route=None)  # warm-up
    hyps: list[str] = [""] * len(items)
    stats = {"fallback": 0, "looped": 0}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out = transcribe_batch(bb, [wavs[i] for i in idx], [items[i]["lang"] for i in idx], opts, route=None)
            for i, h in zip(idx, out):
                hyps[i] = h.text
                stats["fallback"] += h.fallback
                stats["looped"] += h.looped
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return hyps, time.perf_counter() - t0, stats


def run_engine_system(system, items, wavs, threads, work, batch_size) -> tuple[list[str], float]:
    """One of ``bench/engine_speed.py``'s systems (CT2 engine, faster-whisper as users run it), one run."""
    from asr_adapt.models.whisper import load_whisper_tokenizer

    ct2_dir = build_ct2_dir(work)
    tok = load_whisper_tokenizer(ct2_dir)
    ctx = Context(items, wavs, tok, ct2_dir)
    batches = make_batches(items, wavs, batch_size, tok)
    system.prepare(threads, ctx)
    system.run(batches[:1], len(items))  # warm-up
    t0 = time.perf_counter()
    out = system.run(batches, len(items))
    return out.texts, time.perf_counter() - t0, {}


def run_hf_pipeline(items, wavs, device, batch_size) -> tuple[list[str], float]:
    import torch
    from transformers import pipeline

    from asr_adapt.models.resolver import resolve_model

    asr = pipeline("automatic-speech-recognition", model=str(resolve_model("whisper-base")), device=device, dtype=torch.float32)
    hyps: list[str] = [""] * len(items)
    # A token cap like asr-adapt's duration-derived one: without it, the pipeline's looping
    # hypotheses run to the 448-token limit and dominate the run.
    cap = {"max_new_tokens": 128}
    asr({"raw": wavs[0], "sampling_rate": 16000}, generate_kwargs={"language": items[0]["lang"], "task": "transcribe", **cap})
    t0 = time.perf_counter()
    for lang in sorted({it["lang"] for it in items}):  # the pipeline forces one language per call
        idx = [i for i, it in enumerate(items) if it["lang"] == lang]
        outs = asr(
            [{"raw": wavs[i], "sampling_rate": 16000} for i in idx],
            batch_size=batch_size,
            generate_kwargs={"language": lang, "task": "transcribe", **cap},
        )
        for i, o in zip(idx, outs):
            hyps[i] = o["text"]
    return hyps, time.perf_counter() - t0, {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--locales", default="en,de,es,fr")
    ap.add_argument("--n-per-locale", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", default="bench/out/decode_speed", help="audio, converted model and results")
    ap.add_argument("--systems", default="all", help="comma-separated subset of the system names, or 'all'")
    args = ap.parse_args(argv)

    import jiwer
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    locales = args.locales.split(",")
    items = synthesize(work / "audio", locales, args.n_per_locale)
    from asr_adapt.data.audio import load_audio

    wavs = [load_audio(it["path"]) for it in items]
    audio_s = sum(len(w) for w in wavs) / 16000
    systems: dict[str, Callable] = {
        "asr-adapt dynamic min 10 s": lambda: run_asr_adapt(items, wavs, args.device, args.batch_size, min_window_s=10.0),
        "asr-adapt dynamic int8": lambda: run_asr_adapt(
            items, wavs, args.device, args.batch_size, compute_type="int8", min_window_s=10.0
        ),
        "asr-adapt dynamic int8_decoder": lambda: run_asr_adapt(
            items, wavs, args.device, args.batch_size, compute_type="int8_decoder", min_window_s=10.0
        ),
        "asr-adapt dynamic min 1 s": lambda: run_asr_adapt(items, wavs, args.device, args.batch_size, min_window_s=1.0),
        "asr-adapt full 30 s": lambda: run_asr_adapt(items, wavs, args.device, args.batch_size, context="full"),
        "asr-adapt dynamic bf16_encoder_int8_decoder": lambda: run_asr_adapt(
            items, wavs, args.device, args.batch_size, compute_type="bf16_encoder_int8_decoder", min_window_s=10.0
        ),
        "CT2 engine int8": lambda: run_engine_system(CT2Engine("int8"), items, wavs, args.threads, work, args.batch_size),
        "faster-whisper int8 (per clip)": lambda: run_engine_system(
            FasterWhisperSequential(), items, wavs, args.threads, work, args.batch_size
        ),
        "faster-whisper int8 (batched 16)": lambda: run_engine_system(
            FasterWhisperBatched(16), items, wavs, args.threads, work, args.batch_size
        ),
        "transformers pipeline": lambda: run_hf_pipeline(items, wavs, args.device, args.batch_size),
    }
    if args.device != "cpu":
        for name in ("asr-adapt dynamic int8", "asr-adapt dynamic int8_decoder",
                     "asr-adapt dynamic bf16_encoder_int8_decoder", "CT2 engine int8",
                     "faster-whisper int8 (per clip)", "faster-whisper int8 (batched 16)"):
            del systems[name]  # int8 kernels here are CPU kernels; the engine systems run on CPU
    chosen = list(systems) if args.systems == "all" else [s.strip() for s in args.systems.split(",")]
    results = {}
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        hyps, wall, extra = systems[name]()
        wer = {}
        for loc in locales:
            idx = [i for i, it in enumerate(items) if it["lang"] == loc]
            wer[loc] = 100 * jiwer.wer([normalise(items[i]["text"]) for i in idx], [normalise(hyps[i]) or "<empty>" for i in idx])
        results[name] = {"wall_s": wall, "rtf": wall / audio_s, "wer": wer, "extra": extra, "hyps": hyps}
        print(f"  {wall:.1f} s, RTF {wall / audio_s:.3f}, WER {wer}", file=sys.stderr, flush=True)
        work.mkdir(parents=True, exist_ok=True)  # keep what is measured if a later system is stopped
        (work / "results.json").write_text(json.dumps({"items": items, "results": results}, ensure_ascii=False, indent=1))
    ref = results.get("CT2 engine int8", {}).get("wall_s")
    head = "| system | wall s | RTF | speed vs CT2 engine int8 | " + " | ".join(f"WER {loc}" for loc in locales) + " |"
    lines = [
        f"{len(items)} utterances, {audio_s:.1f} s audio ({', '.join(locales)}), device {args.device}, "
        f"{args.threads} threads, batch {args.batch_size}; one run per system (not interleaved): "
        "speed claims come from bench/engine_speed.py",
        "",
        head,
        "|" + "---|" * (4 + len(locales)),
    ]
    for name, r in results.items():
        speed = f"{ref / r['wall_s']:.2f}x" if ref else "-"
        wers = " | ".join(f"{r['wer'][loc]:.1f}" for loc in locales)
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['rtf']:.3f} | {speed} | {wers} |")
    table = "\n".join(lines)
    print(table)
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps({"items": items, "results": results}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
