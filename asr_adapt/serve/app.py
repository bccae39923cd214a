"""FastAPI app: ``POST /transcribe``, ``GET /locales``, ``GET /health``.

Uploads are checked in the request (size, decodability, duration) and answered with 400 and
the reason; only valid audio reaches the batcher. A full queue answers 503 with
``Retry-After``. Each request carries an id (the client's ``X-Request-Id`` or a new one),
echoed in the response body and header, so a client can match answers to requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import uuid
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from asr_adapt.data.audio import AudioError, load_audio
from asr_adapt.serve.batcher import DynamicBatcher, QueueFull
from asr_adapt.serve.config import ServeConfig
from asr_adapt.serve.engine import Request as ASRRequest

log = logging.getLogger(__name__)


class BadUpload(ValueError):
    """An upload that is not acceptable audio; the message is the reason sent to the client."""


def _error(status: int, reason: str, request_id: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": reason}
    if request_id:
        body["id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def read_audio(data: bytes, filename: str | None, config: ServeConfig):
    """(N,) float32 16 kHz mono from uploaded bytes, or :class:`BadUpload` with the reason."""
    if not data:
        raise BadUpload("empty upload (0 bytes)")
    if len(data) > config.max_upload_bytes:
        raise BadUpload(f"upload too large: {len(data)} bytes > {config.max_upload_bytes} ({config.max_upload_mb} MB)")
    suffix = Path(filename or "").suffix[:10] or ".wav"
    # load_audio reads files (its checks for truncated WAVs and compressed formats work on paths).
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        try:
            wav = load_audio(f.name)
        except AudioError as e:
            raise BadUpload(f"not decodable audio: {e.reason}") from None
    duration = len(wav) / 16000
    if duration > config.max_audio_s:
        raise BadUpload(f"audio too long: {duration:.1f} s > {config.max_audio_s} s")
    return wav


def _stream_scheduler(engine, config: ServeConfig):
    """The live-streaming scheduler over the engine's decode service (None for an engine
    without one, or a backbone family that cannot stream)."""
    from asr_adapt.serve.streaming import STREAM_FAMILIES, StreamScheduler

    transcriber = getattr(engine, "transcriber", None)
    if transcriber is None or transcriber.backbone.family not in STREAM_FAMILIES:
        return None
    return StreamScheduler(transcriber, max_sessions=config.stream_max_sessions,
                           max_batch=config.stream_max_batch, lid_s=config.stream_lid_s)


def _add_page(app: FastAPI) -> None:
    """The page at ``/`` for trying live streaming in a browser (microphone in, text out)."""
    from fastapi.responses import HTMLResponse

    page = Path(__file__).with_name("static") / "index.html"

    @app.get("/", response_class=HTMLResponse)
    async def index():
        if not page.exists():
            return HTMLResponse("<p>asr-adapt: POST /transcribe, WebSocket /v1/stream</p>")
        return HTMLResponse(page.read_text(encoding="utf-8"))


def create_app(engine, config: ServeConfig) -> FastAPI:
    """The app around ``engine`` (:class:`~asr_adapt.serve.engine.ASREngine` or anything with
    ``decode(requests)``, ``check_locale``, ``adapter_for`` and ``locales``)."""
    batcher = DynamicBatcher(engine.decode, config.max_batch, config.max_wait_ms, config.max_queue)
    scheduler = _stream_scheduler(engine, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            batcher.close()
            if scheduler is not None:
                scheduler.close()

    app = FastAPI(title="asr-adapt", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.engine = engine
    app.state.scheduler = scheduler
    if scheduler is not None:
        from asr_adapt.serve.stream_route import add_stream_routes

        add_stream_routes(app, scheduler, config)
    _add_page(app)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        # A malformed form (e.g. no file field) is a bad upload too: 400 with what is missing.
        what = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, f"bad request: {what}")

    @app.post("/transcribe")
    async def transcribe(request: Request, file: UploadFile = File(...), locale: str | None = Form(None)):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > config.max_upload_bytes + 64 * 1024:
            return _error(400, f"upload too large: {size} bytes > {config.max_upload_bytes}", rid)
        locale = (locale or "").strip() or None
        if locale is not None:
            try:
                engine.check_locale(locale)
            except ValueError as e:
                return _error(400, f"unsupported locale {locale!r}: {e}", rid)
        data = await file.read(config.max_upload_bytes + 1)
        try:
            wav = await asyncio.to_thread(read_audio, data, file.filename, config)
        except BadUpload as e:
            return _error(400, str(e), rid)
        try:
            future = batcher.submit(ASRRequest(rid, wav, locale))
        except QueueFull as e:
            return _error(503, str(e), rid, headers={"Retry-After": str(e.retry_after_s)})
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=config.request_timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # skipped by the worker if not started yet
            return _error(504, f"not decoded within {config.request_timeout_s} s", rid)
        except Exception as e:  # noqa: BLE001 - the decode of this request failed; others go on
            return _error(500, f"decoding failed: {e}", rid)
        return JSONResponse(dataclasses.asdict(result), headers={"X-Request-Id": rid})

    @app.get("/locales")
    async def locales():
        return {"locales": list(engine.locales), "detect": "requests without a locale are language-identified "
                "and routed to that language's adapter"}

    @app.get("/health")
    async def health():
        s = batcher.stats
        ok = batcher.alive
        body = {"status": "ok" if ok else "worker stopped", "queue": batcher.queue.qsize(),
                "max_queue": config.max_queue, "max_batch": config.max_batch, "requests": s.requests,
                "batches": s.batches, "errors": s.errors, "rejected": s.rejected,
                "batch_sizes": {str(k): v for k, v in sorted(s.batch_sizes.items())}}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
