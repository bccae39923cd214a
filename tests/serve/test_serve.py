"""The server on a free loopback port with a tiny model: batching, routing, refusals, resilience."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from asr_adapt.decoding.decoders import transcribe_batch
from asr_adapt.serve import DynamicBatcher, QueueFull, Request, ServeConfig, create_app, serve_in_thread
from tests.serve.conftest import wav_bytes

WAIT_S = 120  # bound on every wait below (a hang fails the test instead of blocking the suite)


def offline(engine, wav, locale):
    """One request decoded alone, the way asr-adapt decodes offline."""
    key = engine.adapter_for(locale)
    opts = engine.transcriber.options_for(key)
    return transcribe_batch(engine.backbone, [wav], [locale], opts, route=[key])[0].text


def post(client, wav_or_bytes, locale=None, rid=None, name="a.wav"):
    data = wav_or_bytes if isinstance(wav_or_bytes, bytes) else wav_bytes(wav_or_bytes)
    headers = {"X-Request-Id": rid} if rid else {}
    form = {"locale": locale} if locale else {}
    return client.post("/transcribe", files={"file": (name, data, "audio/wav")}, data=form, headers=headers)


def test_mixed_locale_batch_equals_single_decodes(engine, clips):
    reqs = [Request(f"r{i}", w, loc) for i, (w, loc) in enumerate(zip(clips * 2, ["el-GR"] * 3 + ["uk-UA"] * 3))]
    batch = engine.decode(reqs)
    assert [r.batch_size for r in batch] == [6] * 6
    assert [r.adapter for r in batch] == ["el-GR"] * 3 + ["uk-UA"] * 3
    singles = [offline(engine, r.wav, r.locale) for r in reqs]
    assert [r.text for r in batch] == singles
    assert singles[:3] != singles[3:]  # the two adapters really decode differently


def test_concurrent_mixed_locale_requests_match_offline(engine, clips):
    cfg = ServeConfig(max_batch=4, max_wait_ms=50, max_queue=32)
    jobs = [(f"req-{i}", clips[i % 3], ("el-GR", "uk-UA")[i % 2]) for i in range(8)]
    with serve_in_thread(create_app(engine, cfg)) as url, httpx.Client(base_url=url, timeout=WAIT_S) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda j: post(client, j[1], j[2], j[0]), jobs))
        health = client.get("/health").json()
        assert client.get("/locales").json()["locales"] == ["el-GR", "uk-UA"]
    assert [a.status_code for a in answers] == [200] * 8
    for (rid, wav, loc), a in zip(jobs, answers):
        body = a.json()
        assert body["id"] == rid == a.headers["x-request-id"]
        assert (body["locale"], body["adapter"], body["detected"]) == (loc, loc, False)
        assert body["text"] == offline(engine, wav, loc)
    assert health["requests"] == 8 and health["errors"] == 0 and health["status"] == "ok"
    assert sum(int(k) * v for k, v in health["batch_sizes"].items()) == 8


def test_request_without_locale_is_language_identified_and_routed(engine, clips):
    code = engine.transcriber.identify([clips[1]])[0]
    with serve_in_thread(create_app(engine, ServeConfig())) as url, httpx.Client(base_url=url, timeout=WAIT_S) as c:
        body = post(c, clips[1]).json()
    assert body["detected"] is True and body["language"] == code
    assert body["adapter"] == engine.adapter_for(code)
    assert body["text"] == offline(engine, clips[1], code)


def test_detected_language_maps_to_adapter_locale(engine):
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.serve import ASREngine

    assert engine.adapter_for("el") == "el-GR"  # a bare language -> its only adapter locale
    # Another locale of the language is not served by a sibling unless configured (as in decode).
    assert engine.adapter_for("el-CY") is None and engine.adapter_for("fr") is None
    configured = ASREngine(Transcriber(engine.backbone, siblings={"el-CY": "el-GR"}))
    assert configured.adapter_for("el-CY") == "el-GR" and configured.adapter_for("el-GR") == "el-GR"


def test_bad_uploads_get_400_with_reason_and_server_keeps_serving(engine, clips):
    cfg = ServeConfig(max_upload_mb=0.2, max_audio_s=2.0)
    long_wav = np.zeros(16000 * 3, dtype=np.float32)
    with serve_in_thread(create_app(engine, cfg)) as url, httpx.Client(base_url=url, timeout=WAIT_S) as c:
        cases = {
            "not decodable audio": post(c, b"this is not audio at all" * 10, "el-GR"),
            "empty upload": post(c, b"", "el-GR"),
            "too large": post(c, b"\0" * 300_000, "el-GR"),
            "audio too long": post(c, long_wav, "el-GR"),
            "truncated WAV": post(c, wav_bytes(clips[0])[:-5000], "el-GR"),
            "unsupported locale": post(c, clips[0], "xx-YY"),
            "bad request": c.post("/transcribe", data={"locale": "el-GR"}),  # no file field
        }
        for reason, r in cases.items():
            assert r.status_code == 400, (reason, r.text)
            assert reason in r.json()["error"], (reason, r.json())
        ok = post(c, clips[0], "el-GR")
        assert ok.status_code == 200 and ok.json()["text"] == offline(engine, clips[0], "el-GR")
        assert c.get("/health").json()["status"] == "ok"


class GatedEngine:
    """Wraps an engine; its decode blocks until ``gate`` is set (a slow model, without timing)."""

    def __init__(self, engine) -> None:
        self.engine, self.gate, self.entered = engine, threading.Event(), threading.Event()
        self.locales = engine.locales

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def decode(self, requests):
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("gate never opened")
        return self.engine.decode(requests)


def test_full_queue_gives_503_with_retry_after_then_recovers(engine, clips):
    gated = GatedEngine(engine)
    cfg = ServeConfig(max_batch=1, max_wait_ms=0, max_queue=1)
    app = create_app(gated, cfg)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=WAIT_S) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, c, clips[0], "el-GR", "first")
        assert gated.entered.wait(WAIT_S)  # the worker is busy with the first request
        second = pool.submit(post, c, clips[1], "uk-UA", "second")
        batcher = app.state.batcher
        for _ in range(WAIT_S * 50):  # until the second request sits in the (one-slot) queue
            if batcher.queue.qsize() == 1:
                break
            threading.Event().wait(0.02)
        third = post(c, clips[2], "el-GR", "third")
        assert third.status_code == 503
        assert int(third.headers["retry-after"]) >= 1 and "queue is full" in third.json()["error"]
        gated.gate.set()
        assert first.result(WAIT_S).status_code == 200 and second.result(WAIT_S).status_code == 200
        again = post(c, clips[2], "el-GR", "again")
        assert again.status_code == 200 and again.json()["text"] == offline(engine, clips[2], "el-GR")
        assert c.get("/health").json()["rejected"] == 1


class FailingEngine(GatedEngine):
    """Decode raises for requests whose id starts with 'boom' (a model error on one input)."""

    def decode(self, requests):
        if any(r.id.startswith("boom") for r in requests):
            raise RuntimeError("model exploded")
        return self.engine.decode(requests)


def test_a_failing_request_fails_alone_and_the_worker_survives(engine, clips):
    failing = FailingEngine(engine)
    batcher = DynamicBatcher(failing.decode, max_batch=3, max_wait_ms=0)
    futures = [batcher.submit(Request(rid, clips[0], "el-GR")) for rid in ("ok-1", "boom-2", "ok-3")]
    batcher.start()  # all three were queued first, so they form one batch
    try:
        assert futures[0].result(WAIT_S).text == futures[2].result(WAIT_S).text == offline(engine, clips[0], "el-GR")
        with pytest.raises(RuntimeError, match="model exploded"):
            futures[1].result(WAIT_S)
        assert batcher.submit(Request("ok-4", clips[1], "uk-UA")).result(WAIT_S).text == offline(engine, clips[1], "uk-UA")
        assert batcher.alive and batcher.stats.errors == 1 and batcher.stats.batch_sizes[3] == 1
    finally:
        batcher.close()


def test_batcher_forms_batches_up_to_max_batch_and_skips_cancelled():
    seen: list[list[int]] = []
    batcher = DynamicBatcher(lambda xs: (seen.append(list(xs)), [x * 10 for x in xs])[1], max_batch=3, max_wait_ms=0)
    futures = [batcher.submit(i) for i in range(7)]
    futures[4].cancel()
    batcher.start()
    try:
        assert [f.result(WAIT_S) for i, f in enumerate(futures) if i != 4] == [0, 10, 20, 30, 50, 60]
    finally:
        batcher.close()
    assert seen == [[0, 1, 2], [3, 5], [6]]


def test_bounded_queue_raises_queue_full():
    batcher = DynamicBatcher(lambda xs: xs, max_batch=1, max_queue=2)  # not started: nothing drains
    batcher.submit(1)
    batcher.submit(2)
    with pytest.raises(QueueFull) as e:
        batcher.submit(3)
    assert e.value.retry_after_s >= 1 and batcher.stats.rejected == 1


def test_cli_flags_come_from_the_config():
    from asr_adapt.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--max-batch", "4", "--siblings", "pt=pt-BR,el=el-GR"])
    assert (args.max_batch, args.host, args.siblings) == (4, "127.0.0.1", {"pt": "pt-BR", "el": "el-GR"})


def test_commands_work_without_the_serve_extra():
    """fastapi/uvicorn are the optional `serve` extra: every other command must still load."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('fastapi', 'uvicorn', 'multipart'): sys.modules[m] = None  # import fails like a missing package\n"
        "from asr_adapt.cli.main import build_parser\n"
        "build_parser().parse_args(['synth', '--list-locales'])\n"
        "from asr_adapt.serve import ServeConfig\n"
        "print(ServeConfig().port)\n"
        "try:\n"
        "    from asr_adapt.serve import create_app\n"
        "except ImportError:\n"
        "    print('no app')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "app" and "no app" in out.stdout
