"""Decode-time cost of trained adapters (routed, merged, int8) and the transducer's streaming RTF.

Part 1, Whisper adapters, on the real whisper-base (``load_model("whisper", "whisper-base")``,
the packaged offline weights) with trained adapters for 4 locales. Systems, all in this process:

* ``base``                      no adapter
* ``lda``, ``lora``, ``s2lora``     the recipes' adapters (``recipes/whisper/*.yaml``: LDA after
  every encoder and decoder block, automatic bottleneck; LoRA r=8, alpha=16 and S2-LoRA r=16
  on every linear layer), unmerged: each batch holds clips of all 4 locales and every row is
  routed to its own locale's adapter
* ``lora-merged``, ``s2lora-merged``  the same adapters with the first locale merged into the
  weights (``merge_locale``); every row is routed to that locale
* ``base-int8``, ``lora-merged-int8``, ``s2lora-merged-int8``  the same after
  ``set_compute_type("int8")`` (merged linears convert like the others)

Adapters are trained from the identity with the library (``attach_adapters``, ``freeze_base``,
``compute_loss`` + ``regularization_loss`` under ``routing.use``): ``--train-steps`` AdamW steps
at the recipes' learning rates (constant), each step one train clip per locale at a
``--train-window`` s minimum window, on an espeak-ng corpus made by :mod:`asr_adapt.data.synth`
(created on first use). They are saved under ``--adapters-dir`` and reused by later runs
(``--retrain`` trains them again). Before any timing the script asserts that every adapter
system's first-step logits differ from the base's on every row (the adapters are not the
identity) and that a merged locale's logits equal its routed, unmerged logits.

Fixed work: trained adapters change the transcripts, and a longer transcript costs more
decoder steps for a reason that is not adapter compute. So end-of-text is suppressed and the
repetition guard and fallback are off: every row decodes exactly ``--tokens`` tokens in every
system. Everything else is the default decoding path (``transcribe_batch``, dynamic window
with the 10 s minimum).

Timing: ``--repeats`` rounds; in each, every system decodes every batch once, interleaved (per
batch, the systems in turn, the starting system rotating). Per round, a system's time is divided
by the base's in the same round (paired, so load changes hit both); reported: the median of
those ratios over rounds and their min-max, for process CPU time (``time.process_time``, one
thread) and wall time. Int8 systems are compared with ``base-int8``.

Part 2, transducer streaming. ``small`` preset (random weights, CMVN fitted on the clips;
500-piece sentencepiece vocabulary trained on the train split's text), ``torch.set_num_threads(1)``, 320 ms chunks,
:func:`asr_adapt.decoding.streaming_transducer.stream_transducer` per clip. RTF =
processing seconds / audio seconds, wall and CPU. With random weights the greedy search
emits close to its cap of 3 symbols per 40 ms frame, so the predictor/joiner work is
a worst case (the token count is printed).

    taskset -c 1 python bench/decode_overhead.py --parts whisper --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

from speed_common import cpu_model

from asr_adapt.decoding.decoders import decoding_options, transcribe_batch

LOCALES = ("el-GR", "uk-UA", "de-DE", "cs-CZ")
# (adapter type, config, learning rate): recipes/whisper/{lda,lora,s2lora}.yaml
ADAPTERS = {
    "lda": ({"groups": ["encoder", "decoder"]}, 2e-3),
    "lora": ({"rank": 8, "alpha": 16}, 1e-3),
    "s2lora": ({"rank": 16}, 5e-3),
}
SYSTEMS = ("base", "lda", "lora", "s2lora", "lora-merged", "s2lora-merged",
           "base-int8", "lora-merged-int8", "s2lora-merged-int8")


def split_system(name: str) -> tuple[str | None, bool, bool]:
    """``"lora-merged-int8"`` -> (adapter type or None, merged, int8)."""
    parts = name.split("-")
    kind = None if parts[0] == "base" else parts[0]
    return kind, "merged" in parts, "int8" in parts


def reference(name: str) -> str:
    return "base-int8" if split_system(name)[2] else "base"


# ---------------------------------------------------------------- data and training

def corpus(root: Path, locales: list[str], n_train: int, n_dev: int) -> Path:
    """An espeak-ng train/dev corpus of ``locales`` under ``root`` (made once, then reused)."""
    from asr_adapt.data.synth import SynthConfig, synthesize

    if not (root / "dev").is_dir():
        synthesize(root, SynthConfig(locales=tuple(locales), utts_per_locale=n_dev, train_utts_per_locale=n_train,
                                     tail_fraction=1.0, splits=("train", "dev"), jobs=1, seed=0), progress=False)
    return root


def load_items(data: Path, locales: list[str], n: int, lo: float = 2.0, hi: float = 6.0) -> dict[str, list[dict]]:
    """``{locale: [item]}``: the first ``n`` clips of lo-hi s per locale (by utterance id), audio loaded."""
    from asr_adapt.data.audio import load_audio
    from asr_adapt.data.kaldi import read_data_dir

    utts = sorted(read_data_dir(data), key=lambda u: u.utt_id)
    out = {}
    for loc in locales:
        mine = [u for u in utts if u.lang == loc and u.duration and lo <= u.duration <= hi][:n]
        if len(mine) < n:
            raise SystemExit(f"{data}: only {len(mine)} clips of {lo}-{hi} s for {loc}, need {n}")
        out[loc] = [{"id": u.utt_id, "text": u.text, "lang": u.lang, "wav": load_audio(u.audio)} for u in mine]
    return out


def train_adapters(base, kind: str, locales: list[str], train: dict[str, list[dict]], args) -> tuple:
    """A copy of ``base`` with ``kind`` adapters trained briefly; returns (model, losses, seconds)."""
    import torch

    from asr_adapt import routing
    from asr_adapt.adapters import attach_adapters, freeze_base, regularization_loss

    conf, lr = ADAPTERS[kind]
    bb = copy.deepcopy(base)
    bb.train_min_window_s = args.train_window
    attach_adapters(bb, bb.injection_points(), kind, conf, locales)
    freeze_base(bb)
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    bb.train()
    losses, t0 = [], time.perf_counter()
    for step in range(args.train_steps):
        batch = [train[loc][step % len(train[loc])] for loc in locales]
        langs = [it["lang"] for it in batch]
        with routing.use(langs):
            loss = bb.compute_loss([it["wav"] for it in batch], [it["text"] for it in batch], langs)
        total = loss + regularization_loss(bb)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in bb.parameters() if p.requires_grad], 1.0)
        opt.step()
        losses.append(round(loss.item(), 4))
        print(f"train {kind} step {step}: loss {losses[-1]:.3f}", file=sys.stderr, flush=True)
    return bb.eval(), losses, time.perf_counter() - t0


def trained_adapters(base, locales: list[str], args) -> dict[str, dict]:
    """``{type: {"dir": bundle, ...training record}}``: trained now or read back from ``--adapters-dir``."""
    from asr_adapt.adapters import model_fingerprint, save_adapters

    root = Path(args.adapters_dir)
    out, train = {}, None
    for kind in ADAPTERS:
        bundle, record = root / kind, root / kind / "bench_training.json"
        if args.retrain or not record.is_file():
            if train is None:
                train = load_items(Path(args.data) / "train", locales, args.train_per_locale, 1.0, 6.0)
            model, losses, secs = train_adapters(base, kind, locales, train, args)
            save_adapters(model, bundle, model_fingerprint(base))
            record.write_text(json.dumps({"steps": args.train_steps, "lr": ADAPTERS[kind][1], "conf": ADAPTERS[kind][0],
                                          "train_window_s": args.train_window, "losses": losses,
                                          "seconds": round(secs, 1)}, indent=1))
            del model
        out[kind] = {"dir": str(bundle), **json.loads(record.read_text())}
    return out


# ---------------------------------------------------------------- systems and checks

def build_systems(base, names: list[str], bundles: dict[str, dict], locales: list[str]) -> dict:
    """``{name: WhisperBackbone}``; adapter systems are deep copies of the loaded base."""
    from asr_adapt.adapters import load_adapters, merge_locale, model_fingerprint

    fingerprint = model_fingerprint(base)
    out = {}
    for name in names:
        kind, merged, int8 = split_system(name)
        bb = copy.deepcopy(base)
        if kind is not None:
            load_adapters(bb, bundles[kind]["dir"], fingerprint, bb.injection_points())
        if merged:
            merge_locale(bb, locales[0])
        if int8:
            kept = bb.set_compute_type("int8")
            assert not kept, f"{name}: {len(kept)} linear layers stayed float32 ({kept[:3]}...)"
        out[name] = bb.eval()
    return out


def routes(name: str, langs: list[str], locales: list[str]) -> list[str] | None:
    """Each row's adapter key: its own locale (unmerged), the merged locale, or none (base)."""
    kind, merged, _ = split_system(name)
    return None if kind is None else [locales[0]] * len(langs) if merged else list(langs)


def first_logits(bb, wavs, langs, route, opts):
    """(B, V) logits of the first decoded token, at the decode's window, routed by ``route``."""
    import torch

    from asr_adapt import routing

    feats = bb.features(wavs, opts.context, opts.min_window_s, opts.window_step_s).to(bb.device)
    prompts = torch.tensor([bb.prompt(lang) for lang in langs])
    with torch.inference_mode(), routing.use(route or [None] * len(wavs)):
        return bb.decoder_logits(prompts, bb.encode(feats), bb.new_cache())


def check_adapters(systems: dict, batch: list[dict], locales: list[str], opts) -> dict:
    """Assert the adapters act (logits differ from the base on every row) and merged == routed."""
    wavs, langs = [it["wav"] for it in batch], [it["lang"] for it in batch]
    logits = {n: first_logits(bb, wavs, langs, routes(n, langs, locales), opts) for n, bb in systems.items()}
    report = {}
    for name, lg in logits.items():
        ref = logits[reference(name)]
        rel = ((lg - ref).norm(dim=-1) / ref.norm(dim=-1)).tolist()
        report[name] = {"rel_diff_vs_base_per_row": [round(r, 5) for r in rel]}
        if name != reference(name):
            assert min(rel) > 1e-3, f"{name}: logits equal the base's on some row ({min(rel):.1e}); identity adapters?"
        kind, merged, int8 = split_system(name)
        if merged and not int8 and kind in logits:
            # Every row is decoded as locales[0] when merged; the routed system gives that only to its rows.
            rows = [i for i, lang in enumerate(langs) if lang == locales[0]]
            err = ((lg[rows] - logits[kind][rows]).norm() / logits[kind][rows].norm()).item()
            report[name]["rel_diff_vs_routed_unmerged"] = err
            assert err < 1e-3, f"{name}: merged logits differ from routed unmerged ones by {err:.1e}"
    return report


# ---------------------------------------------------------------- timing

def whisper_overhead(args) -> dict:
    import torch

    from asr_adapt.loading import load_model

    locales = args.locales.split(",")
    data = corpus(Path(args.data), locales, args.train_per_locale, args.per_locale + 4)
    base = load_model("whisper", "whisper-base")
    bundles = trained_adapters(base, locales, args)
    names = args.systems.split(",")
    systems = build_systems(base, names, bundles, locales)
    del base
    dev = load_items(data / "dev", locales, args.per_locale)
    rows = [dev[loc][i] for i in range(args.per_locale) for loc in locales]  # locales interleaved
    batches = [rows[s: s + args.batch_size] for s in range(0, len(rows), args.batch_size)]
    ref = systems.get("base", next(iter(systems.values())))
    opts = decoding_options(ref, suppress_tokens=(*ref.suppress_tokens, ref.tokens.eot), repetition_guard=False,
                            compression_ratio_threshold=None, fallback="none", max_new_tokens=args.tokens)
    checks = check_adapters(systems, batches[0], locales, opts)

    def decode(name, batch):
        langs = [it["lang"] for it in batch]
        with torch.inference_mode():
            return transcribe_batch(systems[name], [it["wav"] for it in batch], langs, opts,
                                    route=routes(name, langs, locales))

    for name in names:  # warm-up (allocator, lazy init, int8 packing)
        decode(name, batches[0])
    times = {n: [] for n in names}
    tokens = {n: [] for n in names}
    loads, k = [os.getloadavg()[0]], 0
    for rnd in range(args.repeats):
        acc = {n: [0.0, 0.0] for n in names}
        for batch in batches:
            for name in names[k % len(names):] + names[: k % len(names)]:
                w0, c0 = time.perf_counter(), time.process_time()
                hyps = decode(name, batch)
                acc[name][0] += time.perf_counter() - w0
                acc[name][1] += time.process_time() - c0
                if rnd == 0:
                    tokens[name] += [h.tokens for h in hyps]
            k += 1
        for n in names:
            times[n].append({"wall": acc[n][0], "cpu": acc[n][1]})
        loads.append(os.getloadavg()[0])
        print(f"round {rnd}: " + " ".join(f"{n}={acc[n][1]:.2f}s" for n in names) + f" load {loads[-1]:.2f}",
              file=sys.stderr, flush=True)
    n_tok = {len(t) for ts in tokens.values() for t in ts}
    assert n_tok == {args.tokens}, f"rows decoded {sorted(n_tok)} tokens, not the fixed {args.tokens}"
    summary = {}
    for n in names:
        r = reference(n)
        entry = {"adapters": bundles.get(split_system(n)[0], {}).get("dir"), **checks[n]}
        for clock in ("cpu", "wall"):
            ratios = [t[clock] / b[clock] for t, b in zip(times[n], times[r])]
            entry[clock] = {"median_s": statistics.median(t[clock] for t in times[n]), "ratio_median": statistics.median(ratios),
                            "ratio_min": min(ratios), "ratio_max": max(ratios)}
        entry["rows_with_other_tokens_than_ref"] = sum(a != b for a, b in zip(tokens[n], tokens[r]))
        summary[n] = entry
    return {"summary": summary, "times": times, "loads": loads, "names": names, "training": bundles,
            "clips": [it["id"] for it in rows], "audio_s": sum(len(it["wav"]) for it in rows) / 16000,
            "batches": len(batches), "tokens_per_row": args.tokens}


def print_whisper(w: dict, args) -> None:
    s = w["summary"]
    print(f"{len(w['clips'])} dev clips ({args.per_locale} per locale of {args.locales}; {w['audio_s']:.1f} s audio) in "
          f"{w['batches']} batch(es) of {args.batch_size}, {w['tokens_per_row']} tokens per row, {args.threads} thread(s), "
          f"{args.repeats} rounds; 1-min load average {min(w['loads']):.2f}-{max(w['loads']):.2f}\n")
    print("| system | vs | CPU s (median) | CPU ratio: median [min-max] | wall ratio: median [min-max] "
          "| logits vs ref (min row rel. diff) |")
    print("|---|---|---|---|---|---|")
    for n in w["names"]:
        e, c, wl = s[n], s[n]["cpu"], s[n]["wall"]
        print(f"| {n} | {reference(n)} | {c['median_s']:.2f} | {c['ratio_median']:.3f} [{c['ratio_min']:.3f}-"
              f"{c['ratio_max']:.3f}] | {wl['ratio_median']:.3f} [{wl['ratio_min']:.3f}-{wl['ratio_max']:.3f}] | "
              f"{min(e['rel_diff_vs_base_per_row']):.3f} |")


def transducer_rtf(args, items, wavs) -> dict:
    import torch

    from asr_adapt.data.kaldi import read_data_dir
    from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer
    from asr_adapt.models.transducer import TransducerBackbone, train_tokenizer

    torch.manual_seed(0)
    # The small preset's 500-piece sentencepiece vocabulary, trained on the sibling train split.
    train_dir = Path(args.data) / "train"
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="bench/out/decode_overhead/data",
                    help="asr-adapt synth corpus root with train/ and dev/ (made here when missing)")
    ap.add_argument("--locales", default=",".join(LOCALES), help="4 locales; the first is the merged one")
    ap.add_argument("--per-locale", type=int, default=2, help="dev clips per locale (2-6 s)")
    ap.add_argument("--batch-size", type=int, default=8, help="rows per decode call (locales interleaved)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens every row decodes (end-of-text suppressed)")
    ap.add_argument("--repeats", type=int, default=5, help="timing rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--adapters-dir", default="bench/out/decode_overhead/adapters")
    ap.add_argument("--train-steps", type=int, default=24)
    ap.add_argument("--train-per-locale", type=int, default=8, help="train clips per locale (cycled)")
    ap.add_argument("--train-window", type=float, default=2.0, help="training minimum window (s)")
    ap.add_argument("--retrain", action="store_true", help="train the adapters even if --adapters-dir has them")
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--parts", default="whisper,transducer")
    ap.add_argument("--out", default="bench/results/decode_overhead.json")
    args = ap.parse_args(argv)


    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = cpu_model()
    report: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu,
                    "affinity": sorted(os.sched_getaffinity(0)), "torch": torch.__version__,
                    "command": " ".join(sys.argv)}
    parts = args.parts.split(",")
    if "whisper" in parts:
        report["whisper"] = whisper_overhead(args)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print_whisper(report["whisper"], args)
    if "transducer" in parts:
        locales = args.locales.split(",")
        dev = load_items(corpus(Path(args.data), locales, args.train_per_locale, args.per_locale + 4) / "dev",
                         locales, args.per_locale)
        items = [it for loc in locales for it in dev[loc]]
        t = transducer_rtf(args, items, [it["wav"] for it in items])
        report["transducer"] = t
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"\ntransducer small ({t['params'] / 1e6:.1f} M params, vocab {t['vocab']}), {args.chunk_ms} ms "
              f"chunks, {args.threads} thread: {len(items)} clips, {t['audio_s']:.1f} s audio, {t['pieces']} pieces, "
              f"{t['tokens']} tokens; RTF wall {t['rtf_wall']:.3f}, RTF CPU {t['rtf_cpu']:.3f} "
              f"(load {min(t['loads']):.1f}-{max(t['loads']):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
