"""Decode-time cost of adapters (unmerged, merged, none) and the transducer's streaming RTF.

Part 1, Whisper adapters. One whisper-base copy per system, all in this process:

* ``base``            no adapter
* ``lora-qv``         per-locale LoRA on every q_proj/v_proj, unmerged (forward hooks run)
* ``lora-qv-merged``  the same, merged into the weights (``merge_locale``)
* ``lora-all``        LoRA on all six linear kinds (q, k, v, out, fc1, fc2), unmerged
* ``s2lora-merged``   S2-LoRA on q/v, merged
* ``lda``             LDA after every block, unmerged (LDA cannot be merged)

Adapters are freshly attached (identity: LoRA B = 0, S2-LoRA lambda = 0, LDA up = 0), so
every system produces the same transcripts and runs the same number of decoder steps;
the comparison isolates the adapters' compute. The unmerged hooks still do all their
matrix products. Utterances are of one locale, routed to its adapter (``routing.use``).
Timing is interleaved per call: for each batch, every system decodes it in turn (the
starting system rotating), repeated ``--repeats`` times, so load changes hit all systems
alike. Reported: wall time and process CPU time (``time.process_time``; with one
thread it is close to the time the decode would take on an idle core), both as ratios to
``base``. ``lora-qv-merged`` and ``s2lora-merged`` have exactly the base's weight shapes,
so their deviation from 1.00 is the measurement's noise floor.

Part 2, transducer streaming. ``small`` preset (random weights, CMVN fitted on the clips;
500-piece sentencepiece vocabulary trained on the train split's text), ``torch.set_num_threads(1)``, 320 ms chunks,
:func:`asr_adapt.decoding.streaming_transducer.stream_transducer` per clip. RTF =
processing seconds / audio seconds, wall and CPU. With random weights the greedy search
emits close to its cap of 3 symbols per 40 ms frame, so the predictor/joiner work is
a worst case (the token count is printed).

    python bench/decode_overhead.py --n 16 --batch-sizes 1,8,16 --repeats 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

from asr_adapt.decoding.decoders import transcribe_batch

QV = r"\.(q_proj|v_proj)$"
ALL6 = r"\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)$"
SYSTEMS = ("base", "lora-qv", "lora-qv-merged", "lora-all", "s2lora-merged", "lda")


def build_systems(names: list[str], locale: str) -> dict:
    """``{name: WhisperBackbone}``; adapter systems are deep copies of one loaded base."""
    from asr_adapt.adapters import attach_adapters, merge_locale
    from asr_adapt.models.whisper import WhisperBackbone

    base = WhisperBackbone.from_pretrained("whisper-base")
    recipe = {
        "lora-qv": ("lora", {"rank": 8, "alpha": 16, "patterns": [QV]}, False),
        "lora-qv-merged": ("lora", {"rank": 8, "alpha": 16, "patterns": [QV]}, True),
        "lora-all": ("lora", {"rank": 8, "alpha": 16, "patterns": [ALL6]}, False),
        "s2lora-merged": ("s2lora", {"rank": 8, "patterns": [QV]}, True),
        "lda": ("lda", {}, False),
    }
    out = {}
    for name in names:
        if name == "base":
            out[name] = base
            continue
        kind, conf, merge = recipe[name]
        bb = copy.deepcopy(base)
        attach_adapters(bb, bb.injection_points(), kind, conf, [locale])
        if merge:
            merge_locale(bb, locale)
        out[name] = bb.eval()
    return out


def whisper_overhead(args, items, wavs) -> dict:
    import torch

    from asr_adapt import routing

    locale = items[0]["lang"]
    systems = build_systems(args.systems.split(","), locale)
    names = list(systems)
    opts = next(iter(systems.values())).decoding_options()
    order = sorted(range(len(items)), key=lambda i: -len(wavs[i]))
    for bb in systems.values():  # warm-up (allocator, lazy init) on the longest clip
        with routing.use([locale]):
            transcribe_batch(bb, [wavs[order[0]]], [locale], opts, route=[locale])
    res = {bs: {n: {"wall": 0.0, "cpu": 0.0, "texts": [""] * len(items)} for n in names} for bs in args.batch_sizes}
    loads = [os.getloadavg()[0]]
    k = 0
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                rot = names[k % len(names):] + names[: k % len(names)]
                k += 1
                for n in rot:
                    langs = [locale] * len(idx)
                    w0, c0 = time.perf_counter(), time.process_time()
                    with torch.inference_mode(), routing.use(langs):
                        hyps = transcribe_batch(systems[n], [wavs[i] for i in idx], langs, opts, route=langs)
                    res[bs][n]["wall"] += time.perf_counter() - w0
                    res[bs][n]["cpu"] += time.process_time() - c0
                    for i, h in zip(idx, hyps):
                        res[bs][n]["texts"][i] = h.text
            loads.append(os.getloadavg()[0])
            print(f"repeat {rep} batch {bs}: " + " ".join(f"{n}={res[bs][n]['wall']:.1f}s" for n in names)
                  + f" load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    return {"results": res, "loads": loads, "names": names}


def transducer_rtf(args, items, wavs) -> dict:
    import torch

    from asr_adapt.data.kaldi import read_data_dir
    from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer
    from asr_adapt.models.transducer import TransducerBackbone, train_tokenizer

    torch.manual_seed(0)
    # The small preset's 500-piece sentencepiece vocabulary, trained on the sibling train split.
    train_dir = Path(args.data).parent / "train"
    texts = [u.text for u in read_data_dir(train_dir)] if train_dir.exists() else [it["text"] for it in items]
    tok = train_tokenizer("sentencepiece", texts, vocab_size=500)
    model = TransducerBackbone.from_preset("small", tok).eval()
    model.fit_cmvn(wavs)
    cfg = TransducerStreamingConfig(chunk_ms=args.chunk_ms)
    stream_transducer(model, wavs[0], None, cfg)  # warm-up
    wall = cpu = audio = 0.0
    tokens = pieces = 0
    loads = [os.getloadavg()[0]]
    for w in wavs:
        c0 = time.process_time()
        out = stream_transducer(model, w, None, cfg)
        cpu += time.process_time() - c0
        wall += out.processing_s
        audio += len(w) / 16000
        tokens += len(out.tokens)
        pieces += out.pieces
    loads.append(os.getloadavg()[0])
    n_params = sum(p.numel() for p in model.parameters())
    return {"wall_s": wall, "cpu_s": cpu, "audio_s": audio, "rtf_wall": wall / audio, "rtf_cpu": cpu / audio,
            "tokens": tokens, "pieces": pieces, "params": n_params, "vocab": tok.vocab_size, "loads": loads}


def load_items(data: Path, n: int, locale: str) -> list[dict]:
    from asr_adapt.data.kaldi import read_data_dir

    utts = [u for u in read_data_dir(data) if u.lang == locale and u.duration and 2.0 <= u.duration <= 8.0]
    utts.sort(key=lambda u: u.utt_id)
    return [{"id": u.utt_id, "path": u.audio, "text": u.text, "lang": u.lang, "duration": u.duration}
            for u in utts[:n]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="bench/out/train_speed/data/dev", help="a data dir of asr-adapt synth clips")
    ap.add_argument("--locale", default="de-DE")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--parts", default="whisper,transducer")
    ap.add_argument("--out", default="bench/out/decode_overhead/results.json")
    args = ap.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    from asr_adapt.data.audio import load_audio

    torch.set_num_threads(args.threads)
    items = load_items(Path(args.data), args.n, args.locale)
    wavs = [load_audio(it["path"]) for it in items]
    audio_s = sum(len(w) for w in wavs) / 16000
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "audio_s": audio_s}
    parts = args.parts.split(",")
    if "whisper" in parts:
        w = whisper_overhead(args, items, wavs)
        report["whisper"] = w
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        res, names, loads = w["results"], w["names"], w["loads"]
        print(f"{len(items)} {args.locale} clips, {audio_s:.1f} s audio, {args.threads} thread(s), "
              f"{args.repeats} repeat(s), default decoding options; 1-min load average min {min(loads):.1f} "
              f"mean {sum(loads) / len(loads):.1f} max {max(loads):.1f}\n")
        print("| system | " + " | ".join(f"batch {b}: wall s / vs base / CPU vs base" for b in args.batch_sizes)
              + " | same text as base |")
        print("|---|" + "---|" * (len(args.batch_sizes) + 1))
        for n in names:
            cells = []
            for b in args.batch_sizes:
                r, ref = res[b][n], res[b]["base"] if "base" in res[b] else res[b][n]
                cells.append(f"{r['wall']:.1f} / {r['wall'] / ref['wall']:.3f} / {r['cpu'] / ref['cpu']:.3f}")
            same = all(res[b][n]["texts"] == res[b][names[0]]["texts"] for b in args.batch_sizes)
            print(f"| {n} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
    if "transducer" in parts:
        t = transducer_rtf(args, items, wavs)
        report["transducer"] = t
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"\ntransducer small ({t['params'] / 1e6:.1f} M params, vocab {t['vocab']}), {args.chunk_ms} ms "
              f"chunks, {args.threads} thread: {len(wavs)} clips, {t['audio_s']:.1f} s audio, {t['pieces']} pieces, "
              f"{t['tokens']} tokens; RTF wall {t['rtf_wall']:.3f}, RTF CPU {t['rtf_cpu']:.3f} "
              f"(load {min(t['loads']):.1f}-{max(t['loads']):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
