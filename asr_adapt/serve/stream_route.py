"""The live-streaming WebSocket endpoint ``/v1/stream`` and its protocol.

Client -> server:

1. one text message ``{"type": "start", "locale": "el-GR" | "auto", "sample_rate": 16000,
   "encoding": "pcm_s16le" | "f32le", "policy": "local-agreement" | "alignatt",
   "step_ms": 1000, "guard_ms": 400, "chunk_ms": 320}`` (everything but ``type`` optional;
   the server's defaults fill in, ``policy``/``step_ms``/``guard_ms`` apply to Whisper,
   ``chunk_ms`` to the transducer);
2. binary messages: mono audio in that encoding and rate (other rates are resampled to
   16 kHz as they arrive);
3. ``{"type": "end"}``: no more audio; the rest is decoded and committed. Closing the
   socket instead drops the session (the client is gone: nothing is decoded for it).

Server -> client (JSON text messages):

* ``ready``: ``session``, ``locale``, ``adapter``, ``family`` and the settings in force;
* ``language``: the locale identified for an ``auto`` session (after ``lid_s`` of audio);
* ``partial``: ``text`` = the tentative words after everything committed (replaces the
  previous partial), ``audio_s`` = how far the decoded audio reaches;
* ``final``: ``words`` = newly committed words, each ``{"word", "start", "end"}`` in
  seconds of the stream (the span in which the model had the word's audio; see
  :class:`~asr_adapt.decoding.streaming_whisper.CommittedWord`), and their ``text``;
* ``error``: ``message``; the socket is then closed;
* ``end``: the whole committed ``text``, ``audio_s``, ``words``; the socket is then closed
  normally (1000).

Close codes: 1000 after ``end``; 1008 for a protocol violation (binary before ``start``,
malformed JSON, unknown message, bad settings, idle for ``stream_idle_s``); 1003 for audio
that is not whole samples of the announced encoding; 1009 for a message over the size
limit; 1011 when decoding failed; 1013 when the server already has ``stream_max_sessions``
sessions (retry later). Every refusal carries the reason as the close reason and an
``error`` event before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect

from asr_adapt.serve.config import ServeConfig
from asr_adapt.serve.streaming import SessionRefused, SessionSettings, StreamScheduler

log = logging.getLogger(__name__)

ENCODINGS = {"pcm_s16le": (np.int16, 32768.0), "f32le": (np.float32, 1.0)}  # name -> (dtype, scale)
MIN_RATE, MAX_RATE = 8000, 96000


class ProtocolError(ValueError):
    """A client message the protocol does not allow; ``code`` is the close code."""

    def __init__(self, message: str, code: int = 1008) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StartMessage:
    settings: SessionSettings
    sample_rate: int
    encoding: str


def parse_start(text: str, config: ServeConfig, family: str, check_locale) -> StartMessage:
    """Validate the client's first message; :class:`ProtocolError` names what is wrong."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"the start message is not JSON: {e}") from None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise ProtocolError('the first message must be {"type": "start", ...}')
    known = {"type", "locale", "sample_rate", "encoding", "policy", "step_ms", "guard_ms", "chunk_ms"}
    if unknown := sorted(set(msg) - known):
        raise ProtocolError(f"unknown start fields {unknown}; known: {sorted(known)}")
    locale = msg.get("locale")
    locale = None if locale in (None, "", "auto") else str(locale)
    if locale is not None:
        try:
            check_locale(locale)
        except ValueError as e:
            raise ProtocolError(f"unsupported locale {locale!r}: {e}") from None
    encoding = str(msg.get("encoding", "pcm_s16le"))
    if encoding not in ENCODINGS:
        raise ProtocolError(f"unsupported encoding {encoding!r}; use one of {sorted(ENCODINGS)}", 1003)
    rate = _int(msg, "sample_rate", 16000, MIN_RATE, MAX_RATE)
    from asr_adapt.decoding.streaming_whisper import WHISPER_POLICIES

    policy = str(msg.get("policy", config.stream_policy))
    if family == "whisper" and policy not in WHISPER_POLICIES:
        raise ProtocolError(f"unknown policy {policy!r}; known: {', '.join(WHISPER_POLICIES.names())}")
    settings = SessionSettings(
        locale=locale, policy=policy,
        step_ms=_int(msg, "step_ms", config.stream_step_ms, 200, 5000),
        guard_ms=_int(msg, "guard_ms", config.stream_guard_ms, 0, 2000),
        chunk_ms=_int(msg, "chunk_ms", config.stream_chunk_ms, 40, 2000),
        max_buffer_s=config.stream_trim_s,
    )
    if family == "transducer" and settings.chunk_ms % 40:
        raise ProtocolError(f"chunk_ms must be a multiple of 40, got {settings.chunk_ms}")
    return StartMessage(settings, rate, encoding)


def _int(msg: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = msg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


class AudioDecoder:
    """Bytes of the announced encoding -> float32 16 kHz, resampling as a stream (soxr)."""

    def __init__(self, encoding: str, rate: int) -> None:
        self.dtype, self.scale = ENCODINGS[encoding]
        self.encoding = encoding
        self.width = np.dtype(self.dtype).itemsize
        self.resampler = None
        if rate != 16000:
            import soxr

            self.resampler = soxr.ResampleStream(rate, 16000, 1, dtype="float32")

    def __call__(self, data: bytes, last: bool = False) -> np.ndarray:
        if len(data) % self.width:
            raise ProtocolError(f"binary message of {len(data)} bytes is not whole {self.encoding} samples "
                                f"({self.width} bytes each)", 1003)
        x = np.frombuffer(data, dtype=self.dtype).astype(np.float32) / self.scale
        if self.encoding == "f32le" and not np.isfinite(x).all():
            raise ProtocolError("audio holds NaN or infinite samples", 1003)
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x, last=last)
        return np.ascontiguousarray(x, dtype=np.float32)


def add_stream_routes(app, scheduler: StreamScheduler, config: ServeConfig) -> None:
    """``/v1/stream`` (WebSocket) and ``/v1/stream/metrics`` on ``app``."""
    transcriber = scheduler.transcriber
    max_bytes = config.stream_max_message_kb * 1024

    @app.get("/v1/stream/metrics")
    async def stream_metrics():
        return scheduler.metrics()

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue = asyncio.Queue()
        session = None
        send_task = None

        async def refuse(message: str, code: int) -> None:
            try:
                await ws.send_json({"type": "error", "message": message})
                await ws.close(code, message[:120])
            except Exception:  # noqa: BLE001 - the client may already be gone
                pass

        def emit(event: dict) -> None:
            try:
                loop.call_soon_threadsafe(outbox.put_nowait, event)
            except RuntimeError:  # the event loop has shut down
                pass

        async def sender() -> None:
            while True:
                event = await outbox.get()
                await ws.send_json(event)
                if event["type"] == "end":
                    await ws.close(1000)
                    return
                if event["type"] == "error":
                    await ws.close(1011, event["message"][:120])
                    return

        try:
            msg = await _receive(ws, config.stream_idle_s)
            if msg is None:
                return
            if msg.get("bytes") is not None:
                raise ProtocolError('binary audio before the start message; send {"type": "start", ...} first')
            start = parse_start(msg.get("text") or "", config, scheduler.family, transcriber.check_locale)
            try:
                session = scheduler.open(start.settings, emit)
            except SessionRefused as e:
                await refuse(str(e), e.code)
                return
            decode = AudioDecoder(start.encoding, start.sample_rate)
            s = start.settings
            await ws.send_json({
                "type": "ready", "session": session.id, "locale": session.locale, "adapter": session.adapter,
                "family": scheduler.family, "sample_rate": start.sample_rate, "encoding": start.encoding,
                **({"policy": s.policy, "step_ms": s.step_ms, "guard_ms": s.guard_ms}
                   if scheduler.family == "whisper" else {"chunk_ms": s.chunk_ms}),
            })
            send_task = asyncio.create_task(sender())
            # The cap is on top of one step: a step needs that much undecoded audio to run at all.
            step_s = (s.step_ms if scheduler.family == "whisper" else s.chunk_ms) / 1000
            backlog_cap = config.stream_backlog_s + step_s
            while True:
                recv = asyncio.create_task(_receive(ws, config.stream_idle_s))
                done, _ = await asyncio.wait({recv, send_task}, return_when=asyncio.FIRST_COMPLETED)
                if send_task in done:  # ended (or failed) from the server side
                    recv.cancel()
                    scheduler.drop(session, error=not session.done)
                    return
                msg = recv.result()
                if msg is None:  # the client went away: nothing more is decoded for it
                    send_task.cancel()
                    scheduler.drop(session)
                    return
                if (data := msg.get("bytes")) is not None:
                    if len(data) > max_bytes:
                        raise ProtocolError(f"message of {len(data)} bytes exceeds {max_bytes}", 1009)
                    scheduler.push(session, decode(data))
                    # Flow control: stop reading while this session's undecoded audio is over
                    # the cap; the client's sends block, the other sessions go on.
                    while scheduler.backlog_s(session) > backlog_cap and not send_task.done():
                        await asyncio.sleep(0.02)
                    continue
                end = _parse_control(msg.get("text") or "")
                if end:
                    if decode.resampler is not None:
                        scheduler.push(session, decode(b"", last=True))
                    scheduler.end(session)
                    await send_task
                    scheduler.drop(session)
                    return
        except ProtocolError as e:
            if session is not None:
                scheduler.drop(session, error=True)
            await refuse(str(e), e.code)
        except WebSocketDisconnect:
            if session is not None:
                scheduler.drop(session)
        except asyncio.TimeoutError:
            if session is not None:
                scheduler.drop(session, error=True)
            await refuse(f"no message for {config.stream_idle_s:g} s; closing an idle session", 1008)
        finally:
            if send_task is not None and not send_task.done():
                send_task.cancel()


async def _receive(ws, timeout_s: float) -> dict | None:
    """The next message (``{"text": ...}`` or ``{"bytes": ...}``), or None when the client left."""
    msg = await asyncio.wait_for(ws.receive(), timeout=timeout_s)
    if msg["type"] == "websocket.disconnect":
        return None
    return msg


def _parse_control(text: str) -> bool:
    """A text message after ``start``: True for ``end``; anything else is a protocol error."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed message (not JSON): {e}") from None
    if isinstance(msg, dict) and msg.get("type") == "end":
        return True
    raise ProtocolError(f'unexpected message {text[:60]!r}; after start send audio (binary) or {{"type": "end"}}')
