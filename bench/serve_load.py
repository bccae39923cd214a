"""Load test of ``asr-adapt serve``: dynamic batching vs one request at a time.

Starts the server in-process on a free loopback port (uvicorn thread), sends a bounded
number of requests from N concurrent clients (httpx) with mixed locales, and checks that
every request got exactly one answer (requests carry ids; none lost, none duplicated).
The same requests are then sent to a server with ``max_batch=1`` (no batching) for the
side-by-side ratio. One model is loaded and shared by both runs.

    python bench/serve_load.py --model whisper-base --adapters exp/adapters --data data/test \
        --per-locale 8 --clients 6
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def read_kaldi(data: Path, per_locale: int) -> list[tuple[str, bytes, str]]:
    """(utt id, WAV bytes, locale): the first ``per_locale`` utterances of each locale."""
    wavs = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines() if line.strip())
    langs = dict(line.split(maxsplit=1) for line in (data / "utt2lang").read_text().splitlines() if line.strip())
    taken: collections.Counter = collections.Counter()
    out = []
    for utt in sorted(wavs):
        loc = langs[utt]
        if taken[loc] < per_locale:
            taken[loc] += 1
            out.append((utt, Path(wavs[utt]).read_bytes(), loc))
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def run_load(url: str, items, clients: int, rounds: int, time_limit_s: float) -> dict:
    """Send every item ``rounds`` times from ``clients`` threads; return timings and answers."""
    todo = collections.deque((f"{utt}#{r}", data, loc) for r in range(rounds) for utt, data, loc in items)
    lock = threading.Lock()
    answers: dict[str, list[dict]] = collections.defaultdict(list)
    latencies, statuses = [], collections.Counter()
    deadline = time.monotonic() + time_limit_s

    def client_loop():
        with httpx.Client(base_url=url, timeout=600) as c:
            while time.monotonic() < deadline:
                with lock:
                    if not todo:
                        return
                    rid, data, loc = todo.popleft()
                t0 = time.monotonic()
                r = c.post("/transcribe", files={"file": ("a.wav", data, "audio/wav")}, data={"locale": loc},
                           headers={"X-Request-Id": rid})
                dt = time.monotonic() - t0
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        body = r.json()
                        answers[body["id"]].append(body)
                        latencies.append(dt)

    sent = len(todo)
    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client_loop) for _ in range(clients)]:
            f.result()
    wall = time.monotonic() - t0
    health = httpx.get(f"{url}/health", timeout=30).json()
    return {"sent": sent - len(todo), "wall_s": wall, "latencies": latencies, "statuses": dict(statuses),
            "answers": answers, "health": health}


def summarise(name: str, res: dict, audio_s: dict[str, float]) -> dict:
    ans = res["answers"]
    dup = sum(len(v) > 1 for v in ans.values())
    n_ok = sum(len(v) for v in ans.values())
    lat = res["latencies"]
    sizes = res["health"]["batch_sizes"]
    n_batches = sum(sizes.values())
    return {
        "run": name, "requests": res["sent"], "answered_once": sum(len(v) == 1 for v in ans.values()),
        "duplicated": dup, "lost": res["sent"] - len(ans), "non_200": res["sent"] - n_ok,
        "wall_s": round(res["wall_s"], 2), "req_per_s": round(n_ok / res["wall_s"], 3),
        "audio_s_per_s": round(sum(audio_s[k.split("#")[0]] for k in ans) / res["wall_s"], 2),
        "p50_s": round(percentile(lat, 50), 2), "p95_s": round(percentile(lat, 95), 2),
        "p99_s": round(percentile(lat, 99), 2), "mean_batch": round(sum(int(k) * v for k, v in sizes.items())
                                                                   / max(1, n_batches), 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--adapters", default=None)
    ap.add_argument("--data", required=True, help="Kaldi data dir with wav.scp and utt2lang")
    ap.add_argument("--per-locale", type=int, default=8, help="utterances per locale")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1, help="times each utterance is sent")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=50.0)
    ap.add_argument("--time-limit-s", type=float, default=600.0, help="stop sending new requests after this")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args(argv)

    import soundfile as sf

    from asr_adapt.serve import ASREngine, ServeConfig, create_app, serve_in_thread

    items = read_kaldi(Path(args.data), args.per_locale)
    audio_s = {}
    for utt, data, _ in items:
        info = sf.info(io.BytesIO(data))
        audio_s[utt] = info.frames / info.samplerate
    base = ServeConfig(model=args.model, adapters=args.adapters, max_queue=4 * len(items) * args.rounds,
                       max_wait_ms=args.max_wait_ms, threads=args.threads)
    engine = ASREngine.from_config(base)
    runs = {}
    for name, max_batch in (("batched", args.max_batch), ("one-at-a-time", 1)):
        cfg = dataclasses.replace(base, max_batch=max_batch, max_wait_ms=args.max_wait_ms if max_batch > 1 else 0)
        with serve_in_thread(create_app(engine, cfg)) as url:
            warm = items[0]
            httpx.post(f"{url}/transcribe", files={"file": ("w.wav", warm[1], "audio/wav")}, data={"locale": warm[2]},
                       timeout=600)
            res = run_load(url, items, args.clients, args.rounds, args.time_limit_s)
        runs[name] = res
    # The warm-up request is one batch of 1 in each run; leave it out of the batch-size mean.
    for res in runs.values():
        sizes = res["health"]["batch_sizes"]
        if "1" in sizes:
            sizes["1"] -= 1
    rows = [summarise(name, res, audio_s) for name, res in runs.items()]
    texts = {name: {k: v[0]["text"] for k, v in res["answers"].items()} for name, res in runs.items()}
    same = sum(texts["batched"].get(k) == t for k, t in texts["one-at-a-time"].items())
    speedup = rows[0]["req_per_s"] / max(1e-9, rows[1]["req_per_s"])
    locales = sorted({loc for _, _, loc in items})
    print(f"\n{len(items)} utterances ({', '.join(locales)}; {sum(audio_s.values()):.1f} s audio) x {args.rounds}, "
          f"{args.clients} clients, model {args.model}, adapters {args.adapters}\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"\nthroughput ratio batched / one-at-a-time: {speedup:.2f}x; "
          f"transcripts equal between the runs: {same}/{len(texts['one-at-a-time'])}")
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["non_200"] == 0 for r in rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "speedup": speedup, "same_text": same,
                                              "n": len(texts["one-at-a-time"])}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
