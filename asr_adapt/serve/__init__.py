"""Serving: one base model + every locale's adapters, dynamic batching, HTTP API.

* :mod:`~asr_adapt.serve.engine` - batched decode with per-row adapter routing and
  language identification for requests without a locale;
* :mod:`~asr_adapt.serve.batcher` - bounded queue + worker thread forming batches;
* :mod:`~asr_adapt.serve.app` - FastAPI endpoints, upload checks, 400/503/504 answers;
* :mod:`~asr_adapt.serve.runner` - uvicorn in the foreground or on a free loopback port.
"""

from asr_adapt.serve.app import BadUpload, create_app, read_audio
from asr_adapt.serve.batcher import DynamicBatcher, QueueFull
from asr_adapt.serve.config import ServeConfig
from asr_adapt.serve.engine import LANGUAGE_ID, ASREngine, Request, Result
from asr_adapt.serve.runner import serve_forever, serve_in_thread

__all__ = [
    "LANGUAGE_ID", "ASREngine", "BadUpload", "DynamicBatcher", "QueueFull", "Request", "Result", "ServeConfig",
    "create_app", "read_audio", "serve_forever", "serve_in_thread",
]
