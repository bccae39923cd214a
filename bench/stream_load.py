"""Load test of live streaming (``/v1/stream``): N simulated clients at real-time pace.

Starts the server in-process on a free loopback port (traffic only to 127.0.0.1) and, for
each N in ``--sessions``, opens N sessions at once. Each client streams real speech from a
test set (several utterances of one locale joined with 0.4 s pauses into one stream of about
``--stream-s`` seconds), in packets of a random 100-500 ms, at real-time pace; locales are
mixed across clients, with and without adapters. Per N it reports:

* commit delay p50/p90: wall time at which a correctly recognised word's ``final`` event
  arrived minus the time its audio ended, both from the moment the session started sending
  (real-time pacing makes audio time and wall time one clock); word end times are the
  reference words' character-proportional positions inside the speech span, as
  ``stream-eval`` defines them;
* first-partial latency p50/p90: first non-empty ``partial`` (or ``final``) minus speech onset;
* server RTF (model busy time / audio streamed), per-tick latency, batch sizes;
* checks: every session's committed text equals what ``stream-eval``'s simulation of the
  same policy commits for the same audio (computed afterwards, one stream at a time), and
  the server decoded exactly the audio sent (its ``end`` event's ``audio_s``), i.e. no audio
  was lost or duplicated.

``--batch 1`` gives one-session-at-a-time processing for the side-by-side ratio.

    python bench/stream_load.py --model whisper-base --adapters exp/lda/merged --data data/test \
        --locales cs-CZ,it-IT,en-US --sessions 1,2,4,8 --policy local-agreement --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from speed_common import cpu_model

from asr_adapt.decoding.streaming_eval import speech_span
from asr_adapt.decoding.streaming_summary import reference_end_times
from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig
from asr_adapt.decoding.streaming_whisper import WhisperStreamingConfig
from asr_adapt.scoring import get_normaliser
from asr_adapt.scoring.streaming import pair_correct_tokens

GAP_S = 0.4
STREAM_SETTINGS = {"whisper": WhisperStreamingConfig, "transducer": TransducerStreamingConfig}


def build_streams(data: str, locales: list[str], n: int, stream_s: float, seed: int) -> list[dict]:
    """``n`` client streams, locales round-robin; each joins utterances of its locale."""
    from asr_adapt.data.kaldi import load_utterances

    utts = sorted(load_utterances(data), key=lambda u: u.utt_id)
    by_loc = {loc: [u for u in utts if u.lang == loc] for loc in locales}
    if missing := [loc for loc, us in by_loc.items() if not us]:
        raise SystemExit(f"no utterances of {missing} in {data}")
    rng = random.Random(seed)
    cursor = {loc: 0 for loc in locales}
    streams = []
    for i in range(n):
        loc = locales[i % len(locales)]
        pieces, texts, spans, t = [], [], [], 0.0
        while t < stream_s:
            u = by_loc[loc][cursor[loc] % len(by_loc[loc])]
            cursor[loc] += 1
            wav = u.load()
            on, off = speech_span(wav)
            spans.append((t + on, t + off, u.text))
            pieces += [wav, np.zeros(int(GAP_S * 16000), dtype=np.float32)]
            texts.append(u.text)
            t += len(wav) / 16000 + GAP_S
        wav = np.concatenate(pieces[:-1])
        # 16-bit samples: pcm_s16le carries exactly these, so the simulation sees the same audio.
        wav = (np.round(np.clip(wav, -1, 1) * 32768).clip(-32768, 32767) / 32768).astype(np.float32)
        streams.append({"locale": loc, "wav": wav, "ref": " ".join(texts), "spans": spans,
                        "packet_ms": rng.randint(100, 500)})
    return streams


def word_ends(spans, norm) -> tuple[list[str], list[float]]:
    """Reference units and their estimated end times over the joined stream."""
    units, ends = [], []
    for on, off, text in spans:
        u = norm(text).split()
        units += u
        ends += reference_end_times(u, on, off)
    return units, ends


def session_metrics(stream: dict, result, norm) -> dict:
    ref, ref_end = word_ends(stream["spans"], norm)
    hyp, arrived = [], []
    for t, w in result.words:
        for unit in norm(w["word"]).split():
            hyp.append(unit)
            arrived.append(t)
    e, a = pair_correct_tokens(hyp, arrived, ref, ref_end)
    delays = [x - y for x, y in zip(e, a)]
    onset = stream["spans"][0][0]
    first = next((t for t, ev in result.events if ev["type"] in ("partial", "final")
                  and (ev.get("text") or "").strip()), None)
    end = next((ev for _, ev in result.events if ev["type"] == "end"), {})
    return {"delays": delays, "first_partial": None if first is None else first - onset,
            "audio_s": len(stream["wav"]) / 16000, "decoded_s": end.get("audio_s"), "text": result.text,
            "close": result.close_code}


def simulate(transcriber, stream: dict, family: str, settings: dict) -> str:
    """What stream-eval's simulation commits for this stream (one stream at a time), joined
    into text by the same rule as the server's sessions."""
    from asr_adapt.decoding.streaming_eval import STREAM_SIMULATORS, StreamEvalConfig
    from asr_adapt.serve.streaming import STREAM_FAMILIES

    setting = STREAM_SETTINGS[family](**settings)
    r = STREAM_SIMULATORS.get(family).stream(transcriber, stream["wav"], stream["locale"], setting, StreamEvalConfig())
    return STREAM_FAMILIES.get(family).join(r.words, stream["locale"])


def pct(values, q):
    return round(float(np.percentile(values, q)), 3) if len(values) else None


async def run_round(url, streams, settings):
    from asr_adapt.serve.stream_client import stream_audio

    return await asyncio.gather(*(
        stream_audio(url, s["wav"], locale=s["locale"], packet_ms=s["packet_ms"], realtime=True,
                     settings=settings, start_delay_s=0.05 * i) for i, s in enumerate(streams)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="whisper")
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--adapters", default=None)
    ap.add_argument("--data", required=True, help="Kaldi data dir with text and utt2lang")
    ap.add_argument("--locales", required=True, help="comma-separated locales, assigned to clients round-robin")
    ap.add_argument("--sessions", default="1,2,4,8", help="comma-separated N (concurrent sessions per round)")
    ap.add_argument("--stream-s", type=float, default=20.0, help="audio per client (s, whole utterances)")
    ap.add_argument("--policy", default="local-agreement")
    ap.add_argument("--step-ms", type=int, default=1000)
    ap.add_argument("--guard-ms", type=int, default=400)
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16, help="most sessions per batched step (1: one at a time)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compute-type", default="float32", help="whisper: base linears' compute type (e.g. int8)")
    ap.add_argument("--no-check", action="store_true", help="skip the stream-eval equality check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args(argv)

    import torch

    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.serve import ASREngine, ServeConfig, create_app, serve_in_thread

    torch.set_num_threads(args.threads)
    transcriber = Transcriber.load(args.family, args.model, args.adapters, compute_type=args.compute_type)
    ns = [int(x) for x in args.sessions.split(",")]
    locales = [x.strip() for x in args.locales.split(",") if x.strip()]
    config = ServeConfig(stream_max_sessions=max(ns), stream_max_batch=args.batch, stream_idle_s=120.0)
    app = create_app(ASREngine(transcriber), config)
    sched = app.state.scheduler
    if args.family == "whisper":
        wire = {"policy": args.policy, "step_ms": args.step_ms, "guard_ms": args.guard_ms}
        sim = {"policy": args.policy, "step_ms": args.step_ms, "guard_ms": args.guard_ms}
    else:
        wire = sim = {"chunk_ms": args.chunk_ms}
    norm = get_normaliser("multilingual")
    rows = []
    with serve_in_thread(app) as url:
        for n in ns:
            streams = build_streams(args.data, locales, n, args.stream_s, args.seed + n)
            before = sched.metrics()
            busy0 = sched.stats.busy_s
            ticks0 = sched.stats.ticks
            t0 = time.monotonic()
            results = asyncio.run(run_round(url, streams, wire))
            wall = time.monotonic() - t0
            after = sched.metrics()
            new_ticks = sched.stats.ticks - ticks0  # the metrics keep the latest ticks only
            ticks = list(sched.stats.tick_ms)[-new_ticks:] if new_ticks else []
            per = [session_metrics(s, r, norm) for s, r in zip(streams, results)]
            delays = [d for p in per for d in p["delays"]]
            firsts = [p["first_partial"] for p in per if p["first_partial"] is not None]
            audio = sum(p["audio_s"] for p in per)
            batches = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()
                       if v - before["batch_sizes"].get(k, 0)}
            steps = sum(int(k) * v for k, v in batches.items())
            row = {
                "sessions": n, "batch_limit": args.batch, "audio_s": round(audio, 1), "wall_s": round(wall, 1),
                "commit_delay_p50_s": pct(delays, 50), "commit_delay_p90_s": pct(delays, 90),
                "first_partial_p50_s": pct(firsts, 50), "first_partial_p90_s": pct(firsts, 90),
                "server_rtf": round((sched.stats.busy_s - busy0) / audio, 3),
                "tick_ms_p50": pct(ticks, 50), "tick_ms_p90": pct(ticks, 90),
                "mean_batch": round(steps / max(1, sum(batches.values())), 2), "batch_sizes": batches,
                "closed_ok": sum(p["close"] == 1000 for p in per),
                "audio_complete": sum(p["decoded_s"] is not None and abs(p["decoded_s"] - p["audio_s"]) < 1e-3
                                      for p in per),
            }
            if not args.no_check:
                row["equal_to_stream_eval"] = sum(simulate(transcriber, s, args.family, sim) == p["text"]
                                                  for s, p in zip(streams, per))
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"args": vars(args), "cpu": cpu_model(), "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    ok = all(r["closed_ok"] == r["sessions"] == r["audio_complete"] for r in rows) and all(
        r.get("equal_to_stream_eval", r["sessions"]) == r["sessions"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
