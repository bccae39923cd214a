"""Live streaming over WebSocket (/v1/stream): the protocol, shared batches across sessions,
equality with the stream-eval simulation, and every bad-input case with its defined outcome.

A real uvicorn server on a loopback port and the project's own client (the load benchmark
and ``asr-adapt stream`` use the same client); a tiny random Whisper with el-GR and uk-UA
LoRA adapters."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest

from asr_adapt.decoding.streaming_whisper import WhisperStreamingConfig, new_stream, run_stream
from asr_adapt.decoding.whisper_stream_step import StepRow, decode_steps

websockets = pytest.importorskip("websockets")

from asr_adapt.serve import ServeConfig, create_app, serve_in_thread  # noqa: E402
from asr_adapt.serve.stream_client import encode, http_to_ws, stream_audio  # noqa: E402


def audio(seconds: float, seed: int) -> np.ndarray:
    """Noise quantised to 16 bits, so pcm_s16le carries exactly these samples."""
    x = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))
    return (np.round(np.clip(x, -1, 1) * 32768).clip(-32768, 32767) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def server(engine):
    config = ServeConfig(stream_max_sessions=6, stream_idle_s=3.0, stream_max_batch=8)
    app = create_app(engine, config)
    with serve_in_thread(app) as url:
        yield url, app, engine


def simulated(engine, wav, locale, **settings) -> str:
    """What stream-eval commits for ``wav`` (the same policy code, one stream at a time)."""
    t = engine.transcriber
    key = t.adapter_for(locale)
    cfg = WhisperStreamingConfig(**settings)
    r = run_stream(new_stream(cfg), wav, lambda s: decode_steps(t.backbone, [StepRow(s, locale, key, t.options_for(key))])[0])
    return " ".join(r.words)


async def _many(url, jobs):
    return await asyncio.gather(*(stream_audio(url, w, **kw) for w, kw in jobs))


@pytest.mark.parametrize("policy", ["local-agreement", "alignatt"])
def test_concurrent_sessions_in_shared_batches_equal_stream_eval(server, policy):
    url, app, engine = server
    locales = ["el-GR", "uk-UA", "en-US", "el-GR"]
    wavs = [audio(2.3 + 0.4 * i, seed=i) for i in range(len(locales))]
    settings = {"policy": policy, "step_ms": 500}
    jobs = [(w, {"locale": loc, "packet_ms": 100 + 100 * i, "realtime": False, "settings": settings})
            for i, (w, loc) in enumerate(zip(wavs, locales))]
    before = dict(app.state.scheduler.stats.batch_sizes)
    results = asyncio.run(_many(url, jobs))
    for r, w, loc in zip(results, wavs, locales):
        assert r.close_code == 1000, r.events
        assert r.ready["adapter"] == (None if loc == "en-US" else loc)
        assert r.text == simulated(engine, w, loc, step_ms=500, policy=policy)
        # the final events add up to the end text, in order, and every word has a time span
        assert " ".join(w["word"] for _, w in r.words) == r.text
        assert all(0 <= w["start"] <= w["end"] <= len(wavs[0]) for _, w in r.words)
    after = app.state.scheduler.stats.batch_sizes
    shared = sum(v - before.get(k, 0) for k, v in after.items() if int(k) > 1)
    assert shared > 0, f"no step was batched across sessions: {after}"


def test_resampled_and_float_input(server):
    url, _, engine = server
    wav = audio(1.6, seed=5)
    r = asyncio.run(stream_audio(url, wav, locale="el-GR", encoding="f32le", realtime=False))
    assert r.close_code == 1000 and r.text == simulated(engine, wav, "el-GR")
    import soxr

    wav8k = soxr.resample(wav, 16000, 8000).astype(np.float32)
    r8 = asyncio.run(stream_audio(url, wav8k, locale="el-GR", sample_rate=8000, encoding="f32le", realtime=False))
    assert r8.close_code == 1000 and r8.ready["sample_rate"] == 8000
    assert any(e["type"] == "end" for _, e in r8.events)


async def _raw(url, *messages, wait_close=True):
    """Send raw messages; returns (events, close code, close reason)."""
    events = []
    async with websockets.connect(http_to_ws(url)) as ws:
        for m in messages:
            await ws.send(m)
        try:
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        except websockets.ConnectionClosed as e:
            return events, e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else ""


START = json.dumps({"type": "start", "locale": "el-GR"})


@pytest.mark.parametrize("messages,code,says", [
    ([b"\x00\x01" * 100], 1008, "before the start"),
    (["{not json"], 1008, "not JSON"),
    ([json.dumps({"type": "hello"})], 1008, "first message"),
    ([json.dumps({"type": "start", "locale": "xx-XX"})], 1008, "unsupported locale"),
    ([json.dumps({"type": "start", "encoding": "mp3"})], 1003, "unsupported encoding"),
    ([json.dumps({"type": "start", "step_ms": 10})], 1008, "step_ms"),
    ([START, b"\x00\x01\x02"], 1003, "not whole pcm_s16le samples"),
    ([START, "what"], 1008, "malformed"),
    ([START, json.dumps({"type": "pause"})], 1008, "unexpected message"),
])
def test_bad_messages_end_that_session_with_an_error(server, messages, code, says):
    url, *_ = server
    events, got, reason = asyncio.run(_raw(url, *messages))
    assert got == code
    assert events[-1]["type"] == "error" and says in events[-1]["message"]
    assert says in reason or len(events[-1]["message"]) > 100


def test_full_server_refuses_with_1013_and_keeps_serving(server):
    url, app, engine = server
    limit = app.state.scheduler.max_sessions

    async def scenario():
        holders = [await websockets.connect(http_to_ws(url)) for _ in range(limit)]
        for ws in holders:
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
        refused = await _raw(url, START)
        for ws in holders:
            await ws.close()
        await asyncio.sleep(0.3)
        ok = await stream_audio(url, audio(1.0, 9), locale="uk-UA", realtime=False)
        return refused, ok

    (events, code, reason), ok = asyncio.run(scenario())
    assert code == 1013 and "server full" in reason
    assert ok.close_code == 1000 and ok.text == simulated(engine, audio(1.0, 9), "uk-UA")
    assert app.state.scheduler.metrics()["refused"] >= 1


def test_disconnect_mid_stream_and_idle_timeout_leave_others_unaffected(server):
    url, app, engine = server
    wav = audio(2.0, 11)

    async def quitter():
        async with websockets.connect(http_to_ws(url)) as ws:
            await ws.send(START)
            await ws.recv()
            await ws.send(encode(wav[:12000], "pcm_s16le"))  # mid-word: then gone without an end
        return "gone"

    async def scenario():
        idle = asyncio.create_task(_raw(url, START))  # starts, then says nothing
        results = await asyncio.gather(quitter(), stream_audio(url, wav, locale="el-GR", packet_ms=250,
                                                               realtime=False))
        return results, await idle

    (gone, ok), (events, code, reason) = asyncio.run(scenario())
    assert ok.close_code == 1000 and ok.text == simulated(engine, wav, "el-GR")
    assert code == 1008 and "idle" in reason
    m = app.state.scheduler.metrics()
    assert m["dropped"] >= 1 and m["active_sessions"] == 0


def test_long_stream_sent_faster_than_real_time_is_flow_controlled(engine):
    """A 10-minute stream sent as fast as possible: the server reads it only as fast as it
    decodes (backlog capped), commits it all, and another session is served meanwhile."""
    config = ServeConfig(stream_backlog_s=4.0, stream_idle_s=60.0)
    app = create_app(engine, config)
    long = audio(600.0, 13)
    short = audio(1.5, 14)
    peak = []

    async def watch(sched):
        while True:
            peak.append(max(sched.metrics()["backlog_s"].values(), default=0.0))
            await asyncio.sleep(0.05)

    async def scenario(url):
        w = asyncio.create_task(watch(app.state.scheduler))
        cfg = {"step_ms": 5000}  # few steps: the test's cost is the tiny model, not the policy
        long_run = asyncio.create_task(stream_audio(url, long, locale="uk-UA", packet_ms=500, realtime=False,
                                                    settings=cfg))
        await asyncio.sleep(0.5)
        other = await stream_audio(url, short, locale="el-GR", realtime=False)
        out = await long_run
        w.cancel()
        return out, other

    with serve_in_thread(app) as url:
        out, other = asyncio.run(scenario(url))
    assert out.close_code == 1000 and other.close_code == 1000
    assert other.text == simulated(engine, short, "el-GR")
    end = [e for _, e in out.events if e["type"] == "end"][0]
    assert end["audio_s"] == pytest.approx(600.0, abs=0.01)
    assert max(peak) <= 4.0 + 5.0 + 0.5 + 1e-6  # the cap on top of one step, plus one packet in flight
    assert end["steps"] == 120


def test_auto_locale_is_identified_then_fixed(server):
    url, _, engine = server
    wav = audio(2.5, 21)
    r = asyncio.run(stream_audio(url, wav, locale=None, realtime=False))
    lang = [e for _, e in r.events if e["type"] == "language"]
    assert r.close_code == 1000 and len(lang) == 1
    loc = lang[0]["locale"]
    assert r.text == simulated(engine, wav, loc)


def test_metrics_endpoint(server):
    import httpx

    url, *_ = server
    m = httpx.get(f"{url}/v1/stream/metrics").json()
    assert {"active_sessions", "batch_sizes", "tick_ms_p50", "tick_ms_p90", "refused"} <= set(m)


def test_settings_dataclass_has_a_flag_per_field():
    from asr_adapt.cli.main import build_parser

    p = build_parser()
    args = p.parse_args(["serve", "--stream-max-sessions", "3", "--stream-policy", "alignatt"])
    assert args.stream_max_sessions == 3 and args.stream_policy == "alignatt"
    assert dataclasses.replace(ServeConfig(), stream_max_sessions=3).stream_max_sessions == 3


def test_a_hundred_sessions_opening_at_once(server):
    """Each gets a defined outcome: up to the limit are served, the rest refused with 1013."""
    url, app, engine = server
    limit = app.state.scheduler.max_sessions
    wav = audio(0.6, 31)

    async def one(i):
        try:
            r = await stream_audio(url, wav, locale="el-GR", realtime=False)
        except Exception as e:  # noqa: BLE001 - any other outcome fails the test below
            return ("raised", repr(e))
        return (r.close_code, r.text)

    async def all_at_once():
        return await asyncio.gather(*(one(i) for i in range(100)))

    outcomes = asyncio.run(all_at_once())
    served = [t for c, t in outcomes if c == 1000]
    refused = [c for c, _ in outcomes if c == 1013]
    assert len(served) + len(refused) == 100, outcomes
    assert len(served) >= limit
    assert set(served) == {simulated(engine, wav, "el-GR")}
    assert app.state.scheduler.metrics()["active_sessions"] == 0



def test_stream_cli_prints_finals_and_the_transcript(server, tmp_path, capsys):
    import soundfile as sf

    from asr_adapt.cli.main import main

    url, _, engine = server
    wav = audio(1.8, 41)
    path = tmp_path / "talk.wav"
    sf.write(path, wav, 16000, subtype="PCM_16")
    assert main(["stream", str(path), "--server", url, "--locale", "el-GR", "--fast"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == simulated(engine, wav, "el-GR")
    assert main(["stream", str(path), "--server", url, "--locale", "xx-XX", "--fast"]) == 1
    assert "unsupported locale" in capsys.readouterr().err
    assert main(["stream", str(path), "--server", url, "--json", "--fast", "--locale", "uk-UA"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["type"] == "end" and {e["type"] for e in events} >= {"final", "end"}


def test_transducer_sessions_stream_chunk_by_chunk_like_stream_eval():
    """Transducer sessions keep their encoder and search state on the server; each one's
    committed words equal the offline chunked stream of the same audio."""
    import torch

    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.decoding.streaming_transducer import (
        TransducerStreamingConfig,
        stream_transducer,
        token_words,
    )
    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer.tokenizer import CharTokenizer
    from asr_adapt.serve import ASREngine

    torch.manual_seed(0)
    model = TransducerBackbone.from_preset("tiny", CharTokenizer.train(["abc de", "fgh ij"])).eval()
    with torch.no_grad():
        model.joiner.out.bias[0] -= 3.0  # emit tokens on noise
    app = create_app(ASREngine(Transcriber(model)), ServeConfig())
    wavs = [audio(1.9, 51), audio(2.6, 52), audio(1.1, 53)]
    chunks = [320, 160, 640]

    def expected(wav, chunk):
        s = stream_transducer(model, wav, None, TransducerStreamingConfig(chunk_ms=chunk))
        return " ".join(token_words(model.tokenizer, s.tokens, [s.emit_times])[0])

    with serve_in_thread(app) as url:
        results = asyncio.run(_many(url, [(w, {"locale": "en-US", "packet_ms": 150, "realtime": False,
                                               "settings": {"chunk_ms": c}}) for w, c in zip(wavs, chunks)]))
        refused = asyncio.run(_raw(url, json.dumps({"type": "start", "locale": "auto"})))
    for r, w, c in zip(results, wavs, chunks):
        assert r.close_code == 1000 and r.ready["chunk_ms"] == c
        assert r.text == expected(w, c) and r.text
        assert " ".join(w["word"] for _, w in r.words) == r.text
    assert refused[1] == 1008 and "cannot identify" in refused[2]
