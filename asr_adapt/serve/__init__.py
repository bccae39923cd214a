"""Serving: one base model + every locale's adapters, dynamic batching, HTTP API.

* :mod:`~asr_adapt.serve.engine` - batched decode with per-row adapter routing and
  language identification for requests without a locale;
* :mod:`~asr_adapt.serve.batcher` - bounded queue + worker thread forming batches;
* :mod:`~asr_adapt.serve.app` - FastAPI endpoints, upload checks, 400/503/504 answers;
* :mod:`~asr_adapt.serve.runner` - uvicorn in the foreground or on a free loopback port.
"""


from importlib import import_module

# The HTTP stack (fastapi, uvicorn) is the optional `serve` extra: names are imported on first
# use, so `asr-adapt --help` and every other command work on an install without it.
_EXPORTS = {
    "BadUpload": "app", "create_app": "app", "read_audio": "app",
    "DynamicBatcher": "batcher", "QueueFull": "batcher",
    "ServeConfig": "config",
    "ASREngine": "engine", "Request": "engine", "Result": "engine",
    "serve_forever": "runner", "serve_in_thread": "runner",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"asr_adapt.serve.{_EXPORTS[name]}"), name)


__all__ = [
    "ASREngine", "BadUpload", "DynamicBatcher", "QueueFull", "Request", "Result", "ServeConfig",
    "create_app", "read_audio", "serve_forever", "serve_in_thread",
]
