"""``asr-adapt stream``: send an audio file (or the microphone) to a running server's
``/v1/stream`` and print partial and final text as it comes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

DESCRIPTION = """\
Stream FILE to an `asr-adapt serve` server at real-time pace (or --fast) and print what it
recognises: the tentative partial text on one updating line (on a terminal), each committed
(final) piece on its own line, and the whole transcript at the end. --json prints every
event as one JSON line instead. Exit status 1 when the server refused or ended the session
with an error.

  asr-adapt stream talk.wav --server http://127.0.0.1:8000 --locale el-GR
  asr-adapt stream talk.wav --server http://127.0.0.1:8000 --locale auto --policy alignatt
  asr-adapt stream --mic --server http://127.0.0.1:8000 --locale en-US    (needs `sounddevice`)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="stream a file or the microphone to a server's /v1/stream",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE", help="audio file (any rate; mono or the first channel)")
    p.add_argument("--mic", action="store_true", help="stream the default microphone instead (Ctrl-C ends)")
    p.add_argument("--server", default="http://127.0.0.1:8000", help="server base URL or ws:// URL")
    p.add_argument("--locale", default="auto", help="locale (e.g. el-GR) or 'auto' to identify it (default)")
    p.add_argument("--policy", default=None, help="whisper: local-agreement or alignatt (default: the server's)")
    p.add_argument("--step-ms", type=int, default=None, help="whisper: new audio per re-decode (ms)")
    p.add_argument("--chunk-ms", type=int, default=None, help="transducer: chunk size (ms)")
    p.add_argument("--packet-ms", type=int, default=200, help="audio per message (default: 200)")
    p.add_argument("--fast", action="store_true", help="send as fast as the server takes it, not in real time")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.mic):
        print("error: give FILE or --mic (one of them)", file=sys.stderr)
        return 2
    settings = {k: v for k, v in (("policy", args.policy), ("step_ms", args.step_ms), ("chunk_ms", args.chunk_ms))
                if v is not None}
    printer = _Printer(args.json)
    try:
        if args.mic:
            result = asyncio.run(_from_mic(args, settings, printer))
        else:
            from asr_adapt.data.audio import AudioError, load_audio
            from asr_adapt.serve.stream_client import stream_audio

            try:
                wav = load_audio(args.file)
            except AudioError as e:
                print(f"error: {args.file}: {e.reason}", file=sys.stderr)
                return 1
            result = asyncio.run(stream_audio(args.server, wav, locale=args.locale, packet_ms=args.packet_ms,
                                              realtime=not args.fast, settings=settings, on_event=printer))
    except OSError as e:
        print(f"error: cannot reach {args.server}: {e}", file=sys.stderr)
        return 1
    printer.close()
    if result.errors or result.close_code not in (1000, None):
        why = result.errors[-1] if result.errors else result.close_reason
        print(f"error: session ended with close code {result.close_code}: {why}", file=sys.stderr)
        return 1
    return 0


class _Printer:
    """Prints events: JSON lines, or partial text on an updating line and finals as lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self.partial_shown = False

    def __call__(self, event: dict) -> None:
        if self.as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        kind = event["type"]
        if kind == "partial" and self.tty:
            sys.stdout.write("\r\033[K\033[2m" + event["text"][-120:] + "\033[0m")
            sys.stdout.flush()
            self.partial_shown = True
        elif kind == "final":
            self._clear()
            print(f"[{event['audio_s']:7.2f}s] {event['text']}", flush=True)
        elif kind == "language":
            self._clear()
            print(f"language: {event['locale']} (adapter: {event['adapter'] or 'base model'})", flush=True)
        elif kind == "end":
            self._clear()
            print(f"\n{event['text']}", flush=True)
        elif kind == "error":
            self._clear()
            print(f"error: {event['message']}", file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self.partial_shown:
            sys.stdout.write("\r\033[K")
            self.partial_shown = False

    def close(self) -> None:
        self._clear()


async def _from_mic(args, settings, printer):
    """Microphone -> server, until Ctrl-C (then the end message flushes the rest)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise SystemExit(f"error: --mic needs the `sounddevice` package and a sound device ({e}); "
                         "stream a file instead") from None
    import numpy as np

    from asr_adapt.serve.stream_client import MicSource, stream_source

    block = max(1, round(args.packet_ms * 16000 / 1000))
    src = MicSource()
    with sd.InputStream(samplerate=16000, channels=1, dtype="float32", blocksize=block,
                        callback=lambda data, frames, t, status: src.put(np.array(data[:, 0]))):
        return await stream_source(args.server, src, locale=args.locale, settings=settings, on_event=printer)
