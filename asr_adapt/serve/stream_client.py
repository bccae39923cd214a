"""A Python client for ``/v1/stream``: send audio in packets (at real-time pace or as fast
as the server takes it), collect the events with their arrival times.

Used by ``asr-adapt stream``, the load benchmark and the tests::

    result = asyncio.run(stream_audio("ws://127.0.0.1:8000/v1/stream", wav, locale="el-GR"))
    print(result.text)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000


@dataclass
class StreamTranscript:
    """What one session received. events: (seconds since the first audio was sent, event);
    sent_s: when each packet was sent (same clock) and how much audio it carried."""

    ready: dict = field(default_factory=dict)
    events: list[tuple[float, dict]] = field(default_factory=list)
    packets: list[tuple[float, float]] = field(default_factory=list)  # (sent at, audio end time in s)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def text(self) -> str:
        ends = [e for _, e in self.events if e["type"] == "end"]
        return ends[-1]["text"] if ends else ""

    @property
    def words(self) -> list[tuple[float, dict]]:
        """Committed words with the time their ``final`` event arrived."""
        return [(t, w) for t, e in self.events if e["type"] == "final" for w in e["words"]]

    @property
    def errors(self) -> list[str]:
        return [e["message"] for _, e in self.events if e["type"] == "error"]


def http_to_ws(url: str) -> str:
    """``http://host:port`` (a server's base URL) -> ``ws://host:port/v1/stream``."""
    if url.startswith(("ws://", "wss://")):
        return url
    base = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/")
    return base if base.endswith("/v1/stream") else base + "/v1/stream"


def encode(wav: np.ndarray, encoding: str) -> bytes:
    """float32 samples in [-1, 1] -> bytes of ``encoding`` (pcm_s16le rounds to 16 bits)."""
    if encoding == "f32le":
        return np.asarray(wav, dtype="<f4").tobytes()
    return np.clip(np.round(np.asarray(wav) * 32768.0), -32768, 32767).astype("<i2").tobytes()


async def stream_audio(url: str, wav: np.ndarray, *, locale: str | None = None, sample_rate: int = SAMPLE_RATE,
                       packet_ms: int = 200, realtime: bool = True, encoding: str = "pcm_s16le",
                       settings: dict | None = None, on_event: Callable[[dict], None] | None = None,
                       start_delay_s: float = 0.0, timeout_s: float = 600.0) -> StreamTranscript:
    """Stream ``wav`` (N,) float32 at ``sample_rate`` to ``url`` and wait for the end.

    packet_ms: audio per binary message; realtime: send each packet when its audio would
    have been spoken (else back to back); settings: extra start fields (policy, step_ms...).
    """
    await asyncio.sleep(start_delay_s)
    step = max(1, round(packet_ms * sample_rate / 1000))

    async def packets(t0: float):
        for lo in range(0, len(wav), step):
            hi = min(len(wav), lo + step)
            if realtime:
                await asyncio.sleep(max(0.0, t0 + hi / sample_rate - time.monotonic()))
            yield wav[lo:hi]

    return await stream_source(url, packets, locale=locale, sample_rate=sample_rate, encoding=encoding,
                               settings=settings, on_event=on_event, timeout_s=timeout_s)


async def stream_source(url: str, source, *, locale: str | None = None, sample_rate: int = SAMPLE_RATE,
                        encoding: str = "pcm_s16le", settings: dict | None = None,
                        on_event: Callable[[dict], None] | None = None, timeout_s: float = 600.0) -> StreamTranscript:
    """Stream what ``source(t0)`` yields (an async iterator of (N,) float32 packets; ``t0`` is
    the monotonic time the session became ready) and wait for the end."""
    import websockets

    out = StreamTranscript()
    start = {"type": "start", "locale": locale or "auto", "sample_rate": sample_rate, "encoding": encoding,
             **(settings or {})}
    # No keepalive pings: while the server holds a fast sender back (flow control) it reads no
    # frames, so a ping would go unanswered; the audio itself shows the connection is alive.
    async with websockets.connect(http_to_ws(url), max_size=None, open_timeout=60, ping_interval=None) as ws:
        await ws.send(json.dumps(start))
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if first.get("type") != "ready":
            out.events.append((0.0, first))
            if on_event is not None:
                on_event(first)
            await _drain(ws, out, time.monotonic(), on_event, timeout_s)
            return out
        out.ready = first
        t0 = time.monotonic()
        reader = asyncio.create_task(_drain(ws, out, t0, on_event, timeout_s))
        sent = 0
        async for packet in source(t0):
            if reader.done():
                break
            await ws.send(encode(packet, encoding))
            sent += len(packet)
            out.packets.append((time.monotonic() - t0, sent / sample_rate))
        if not reader.done():
            await ws.send(json.dumps({"type": "end"}))
        await reader
    return out


class MicSource:
    """Packets pushed from a sound-device callback thread, as an async source for
    :func:`stream_source`; :meth:`stop` (e.g. on Ctrl-C) ends it."""

    def __init__(self) -> None:
        import queue

        self._q: queue.Queue = queue.Queue()
        self._stopped = False

    def put(self, packet: np.ndarray) -> None:
        self._q.put(packet)

    def stop(self) -> None:
        self._stopped = True

    async def __call__(self, t0: float):
        import queue
        import signal

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self.stop)
        while not self._stopped:
            try:
                yield self._q.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)


async def _drain(ws, out: StreamTranscript, t0: float, on_event, timeout_s: float) -> None:
    import websockets

    try:
        while True:
            msg = await asyncio.wait_for(ws.recv(), timeout_s)
            event = json.loads(msg)
            out.events.append((time.monotonic() - t0, event))
            if on_event is not None:
                on_event(event)
    except websockets.ConnectionClosed as e:
        out.close_code = e.rcvd.code if e.rcvd else None
        out.close_reason = e.rcvd.reason if e.rcvd else ""
