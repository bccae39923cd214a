"""Server settings: one frozen dataclass, also the source of the ``asr-adapt serve`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeConfig:
    """How ``asr-adapt serve`` loads, batches and guards.

    Limits are enforced per request before decoding (400 with the reason); a full queue is
    refused with 503 and ``Retry-After`` rather than letting latency grow without bound.
    """

    model: str = field(default="whisper-base", metadata={"help": "base model name or Hugging Face directory"})
    adapters: str | None = field(default=None, metadata={"help": "adapter bundle directory (all locales are loaded)"})
    family: str = field(default="whisper", metadata={"help": "backbone family (registered in asr_adapt.models)"})
    host: str = field(default="127.0.0.1", metadata={"help": "bind address (loopback by default: put a proxy in front)"})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port)"})
    max_batch: int = field(default=8, metadata={"help": "most requests decoded together in one batch"})
    max_wait_ms: float = field(
        default=30.0, metadata={"help": "longest a request waits for others to join its batch (ms)"}
    )
    max_queue: int = field(default=64, metadata={"help": "requests waiting beyond this are refused with 503"})
    max_upload_mb: float = field(default=10.0, metadata={"help": "largest accepted upload (MB)"})
    max_audio_s: float = field(default=120.0, metadata={"help": "longest accepted audio (seconds)"})
    request_timeout_s: float = field(default=300.0, metadata={"help": "a request not decoded by then gets 504"})
    beam_size: int = field(default=1, metadata={"help": "1: greedy; >1: beam search"})
    context: str = field(default="dynamic", metadata={"help": "'dynamic' (encoder on real length) or 'full' (30 s)"})
    threads: int = field(default=0, metadata={"help": "torch threads for decoding (0: leave torch's default)"})
    compute_type: str = field(default="float32", metadata={
        "help": "whisper: compute type of the base linears (float32, int8, int8_decoder, ...; see asr-adapt decode)"})
    siblings: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "locale or language -> adapter locale allowed to serve it (e.g. el-CY=el-GR, "
                  "pt=pt-BR when pt-BR and pt-PT both have adapters); the fallback rule is the one of "
                  "`asr-adapt decode` (README: adapter fallback)"},
    )
    lid_candidates: tuple[str, ...] = field(
        default=(), metadata={"help": "locales a request without one may be in (identification picks among "
                              "them); empty: any language the model knows"})
    adapter_aware_lid: bool = field(
        default=False, metadata={"help": "rescore identification by decoding the first seconds with each top "
                                 "candidate's adapter"})

    # Live streaming (WebSocket /v1/stream).
    stream_max_sessions: int = field(default=32, metadata={
        "help": "streaming: most concurrent sessions; one more is refused (close code 1013)"})
    stream_max_batch: int = field(default=16, metadata={"help": "streaming: most sessions decoded in one batched step"})
    stream_policy: str = field(default="local-agreement", metadata={
        "help": "streaming whisper: default commit policy ('local-agreement' or 'alignatt'; a session may choose)"})
    stream_step_ms: int = field(default=1000, metadata={"help": "streaming whisper: default new audio per re-decode (ms)"})
    stream_guard_ms: int = field(default=400, metadata={"help": "streaming whisper alignatt: default guard (ms)"})
    stream_chunk_ms: int = field(default=320, metadata={"help": "streaming transducer: default chunk (ms, multiple of 40)"})
    stream_trim_s: float = field(default=10.0, metadata={
        "help": "streaming whisper: trim committed audio from a session's buffer beyond this length (s)"})
    stream_backlog_s: float = field(default=10.0, metadata={
        "help": "streaming: stop reading a session's socket while more than this much of its audio (beyond one step) is undecoded (s)"})
    stream_idle_s: float = field(default=30.0, metadata={"help": "streaming: close a session silent for this long (s)"})
    stream_lid_s: float = field(default=2.0, metadata={
        "help": "streaming: audio (s) an 'auto' session is language-identified on before it streams"})
    stream_max_message_kb: int = field(default=1024, metadata={"help": "streaming: largest accepted message (KiB)"})

    def __post_init__(self) -> None:
        if self.stream_max_sessions < 1 or self.stream_max_batch < 1 or self.stream_max_message_kb < 1:
            raise ValueError("stream_max_sessions, stream_max_batch and stream_max_message_kb must be >= 1")
        if min(self.stream_backlog_s, self.stream_idle_s, self.stream_lid_s, self.stream_trim_s) <= 0:
            raise ValueError("stream_backlog_s, stream_idle_s, stream_lid_s and stream_trim_s must be > 0")
        if self.max_batch < 1 or self.max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0 or self.max_audio_s <= 0 or self.request_timeout_s <= 0:
            raise ValueError("max_wait_ms >= 0, and max_upload_mb, max_audio_s, request_timeout_s > 0 are required")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        object.__setattr__(self, "siblings", dict(self.siblings))
        object.__setattr__(self, "lid_candidates", tuple(self.lid_candidates))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
