"""Shared pieces of the reliability suite: bad audio made on the spot, subprocess runs of
the ``asr-adapt`` CLI with their exit code and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
# Decode settings that keep a random tiny model fast: a short window, no fallback pass, few tokens.
FAST = ["--min-window", "1", "--fallback", "none", "--max-new-tokens", "4", "--no-progress", "--threads", "1"]


def tone(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(N, C) float32: a 300 Hz tone gated on and off (so long clips have quiet points) + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.2 * t) > -0.5) + 0.01 * rng.standard_normal(len(t))
    return np.stack([x * 0.5 / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


def write_long_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    """A long 16-bit WAV written a minute at a time (the test itself never holds it all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for i in range(0, n, 60 * sr):
            f.write(tone(min(60 * sr, n - i) / sr, sr, seed=i)[:, 0])
    return path


# file name -> expected outcome: ("ok", duration at 16 kHz) or ("failed", words of the reason)
BAD_AUDIO = {
    "zero.wav": ("failed", "empty file (0 bytes)"),
    "header_only.wav": ("failed", "truncated WAV"),
    "truncated.wav": ("failed", "truncated WAV"),
    "text.wav": ("failed", "unreadable audio header"),
    "junk.mp3": ("failed", "unreadable or corrupt audio"),
    "corrupt_frames.mp3": ("ok", None),  # the MP3 decoder resyncs past bad frames: a transcript of what is left
    "silence.wav": ("ok", 2.0),
    "short.wav": ("ok", 0.05),
    "long45.wav": ("ok", 45.0),
    "sr8k.wav": ("ok", 1.0),
    "sr44k.wav": ("ok", 1.0),
    "sr48k.flac": ("ok", 1.0),
    "stereo.wav": ("ok", 1.0),
    "six_channel.wav": ("ok", 1.0),
    "pcm24.wav": ("ok", 1.0),
    "ulaw.wav": ("ok", 1.0),
    "ünïcødé dir/καλή μέρα 1.wav": ("ok", 1.0),
    "a/same.wav": ("ok", 1.0),
    "b/same.wav": ("ok", 1.5),
}


def fabricate_bad_audio(root: Path) -> Path:
    """Every file of :data:`BAD_AUDIO` under ``root``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("ünïcødé dir", "a", "b"):
        (root / sub).mkdir(exist_ok=True)
    (root / "zero.wav").write_bytes(b"")
    sf.write(root / "a" / "same.wav", tone(1.0), 16000, subtype="PCM_16")
    good = (root / "a" / "same.wav").read_bytes()
    (root / "header_only.wav").write_bytes(good[:44])
    (root / "truncated.wav").write_bytes(good[: len(good) // 2])
    (root / "text.wav").write_text("hello, I am not audio\n")
    sf.write(root / "ok.mp3.tmp", tone(2.0), 16000, format="MP3")
    mp3 = bytearray((root / "ok.mp3.tmp").read_bytes())
    (root / "ok.mp3.tmp").unlink()
    for i in range(200, len(mp3), 50):  # overwrite 20 of every 50 bytes after the first frames
        mp3[i : i + 20] = rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
    (root / "corrupt_frames.mp3").write_bytes(bytes(mp3))
    (root / "junk.mp3").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    sf.write(root / "silence.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    sf.write(root / "short.wav", tone(0.05), 16000)
    write_long_wav(root / "long45.wav", 45.0)
    sf.write(root / "sr8k.wav", tone(1.0, 8000), 8000)
    sf.write(root / "sr44k.wav", tone(1.0, 44100), 44100)
    sf.write(root / "sr48k.flac", tone(1.0, 48000), 48000)
    sf.write(root / "stereo.wav", tone(1.0, 16000, 2), 16000)
    sf.write(root / "six_channel.wav", tone(1.0, 16000, 6), 16000)
    sf.write(root / "pcm24.wav", tone(1.0), 16000, subtype="PCM_24")
    sf.write(root / "ulaw.wav", tone(1.0, 8000), 8000, subtype="ULAW")
    sf.write(root / "ünïcødé dir" / "καλή μέρα 1.wav", tone(1.0), 16000)
    sf.write(root / "b" / "same.wav", tone(1.5, seed=1), 16000)
    return root


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "asr_adapt.cli.main", *map(str, args)]


@dataclass
class Run:
    rc: int
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_measured(*args: str, cwd: Path | None = None) -> Run:
    """Run ``asr-adapt ARGS`` in a subprocess; its exit code and its own peak RSS.

    ``os.wait4`` gives the rusage of exactly this child (``getrusage(RUSAGE_CHILDREN)`` would
    report the largest of every child this test process ever waited for).
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cli_argv(*args), stdout=out, stderr=err, cwd=cwd, env=cli_env())
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, usage.ru_maxrss / 1024, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"))
