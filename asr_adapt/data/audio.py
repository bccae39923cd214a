"""Audio loading: any soundfile-readable file or a Kaldi ``cmd |`` pipe -> 16 kHz mono float32.

Multi-channel audio is averaged to mono and other sample rates are resampled; each kind
of conversion is logged once per process (not per file) so a batch job's log stays
readable. Every failure raises :class:`AudioError` naming the file and the reason.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".sph")
# Formats that go through librosa/audioread when libsndfile cannot read them.
_FALLBACK_SUFFIXES = (".mp3", ".m4a", ".opus", ".ogg")
_logged: set[str] = set()


class AudioError(RuntimeError):
    """An audio file could not be used; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _log_once(key: str, msg: str) -> None:
    if key not in _logged:
        _logged.add(key)
        log.info(msg)


def is_pipe(spec: str) -> bool:
    """Kaldi ``wav.scp`` rxspecifier that is a shell command (``... |``)."""
    return spec.rstrip().endswith("|")


def _read_pipe(spec: str) -> bytes:
    cmd = spec.rstrip()[:-1]
    try:
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise AudioError(spec, "pipe command timed out after 600 s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(spec, f"pipe command failed (exit {proc.returncode}): {err[-1] if err else 'no stderr'}")
    if not proc.stdout:
        raise AudioError(spec, "pipe command produced no audio")
    return proc.stdout


def load_audio(
    spec: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Load audio as mono float32 at ``sample_rate``.

    Args:
        spec: a file path or a Kaldi pipe ``"cmd args |"``.
        offset, duration: seconds; select a segment (Kaldi ``segments`` / manifest offset).

    Returns:
        (N,) float32 array in [-1, 1].

    Raises:
        AudioError: missing, empty, unreadable, truncated or zero-length audio.
    """
    spec = str(spec)
    if is_pipe(spec):
        source: str | io.BytesIO = io.BytesIO(_read_pipe(spec))
    else:
        _check_file(spec)
        source = spec
    try:
        info = sf.info(source)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        sr = info.samplerate
        start = int(round(offset * sr))
        frames = -1 if duration is None else int(round(duration * sr))
        data, sr = sf.read(source, start=start, frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile's messages are terse; keep them but say what we tried
        data, sr = _fallback_decode(spec, source, e, offset, duration)
    if data.shape[0] == 0 and offset:
        raise AudioError(spec, f"zero-length audio (no samples) at offset {offset}s")
    return to_model_rate(data, sr, spec, sample_rate)


def to_model_rate(data: np.ndarray, sr: int, name: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) or (N, C) samples at ``sr`` Hz -> (N',) float32 mono at ``sample_rate``.

    What :func:`load_audio` does after reading, for audio that is already in memory (the
    Python API's arrays). ``name`` identifies the audio in errors and logs.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(name, f"expected (samples,) or (samples, channels) audio, got shape {data.shape}")
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise AudioError(name, f"invalid sample rate {sr!r}")
    if data.shape[0] == 0:
        raise AudioError(name, "zero-length audio (no samples)")
    if not np.all(np.isfinite(data)):
        raise AudioError(name, "audio contains NaN or infinite samples")
    if data.shape[1] > 1:
        _log_once(f"mono{data.shape[1]}", f"downmixing {data.shape[1]}-channel audio to mono (first: {name})")
        data = data.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(data[:, 0])
    if sr != sample_rate:
        _log_once(f"sr{sr}", f"resampling {sr} Hz audio to {sample_rate} Hz (first: {name})")
        import librosa

        wav = librosa.resample(wav, orig_sr=int(sr), target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return wav


def _check_file(spec: str) -> None:
    """Raise :class:`AudioError` for a missing, directory, empty or truncated file."""
    p = Path(spec)
    if not p.exists():
        raise AudioError(spec, "file not found")
    if p.is_dir():
        raise AudioError(spec, "is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(spec, "empty file (0 bytes)")
    if (why := wav_truncation(p)) is not None:
        raise AudioError(spec, why)


def wav_truncation(path: str | os.PathLike) -> str | None:
    """Why a RIFF/WAV file is truncated (its data chunk holds fewer bytes than the header
    declares), or None. libsndfile silently reads what is there, which would pair half an
    utterance with its full transcript. Streamed WAVs (written to a pipe, e.g. by
    ``espeak-ng --stdout`` or ``sox ... -``) carry a placeholder size and are not flagged.
    """
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                if csize == 0 or csize >= 0x7FFF0000:  # placeholder of a streamed WAV
                    return None
                have = size - pos - 8
                if have < csize:
                    return f"truncated WAV: the header declares {csize} data bytes, the file holds {have}"
                return None
            pos += 8 + csize + (csize & 1)  # chunks are padded to even sizes
    return None


def _fallback_decode(spec, source, err, offset, duration):
    """Formats libsndfile cannot read (some MP3/M4A) go through librosa/audioread."""
    if isinstance(source, io.BytesIO) or Path(spec).suffix.lower() not in _FALLBACK_SUFFIXES:
        raise AudioError(spec, f"unreadable or truncated audio ({err})") from None
    try:
        import librosa

        y, sr = librosa.load(spec, sr=None, mono=False, offset=offset, duration=duration)
    except Exception as e2:
        raise AudioError(spec, f"unreadable or corrupt audio (libsndfile and audioread both failed: {str(e2) or type(e2).__name__})") from None
    y = np.atleast_2d(y).T.astype(np.float32)
    return y, sr


def audio_duration(spec: str | os.PathLike) -> float:
    """Duration in seconds from the header (falls back to decoding for pipes and for
    formats libsndfile cannot read). Raises :class:`AudioError` with the same reasons as
    :func:`load_audio` (empty file, truncated WAV, ...)."""
    spec = str(spec)
    if is_pipe(spec):
        return len(load_audio(spec)) / SAMPLE_RATE
    _check_file(spec)
    try:
        info = sf.info(spec)
    except Exception as e:
        if Path(spec).suffix.lower() in _FALLBACK_SUFFIXES:
            return len(load_audio(spec)) / SAMPLE_RATE
        raise AudioError(spec, f"unreadable audio header ({e})") from None
    if info.frames <= 0:
        raise AudioError(spec, "zero-length audio (no samples)")
    return info.frames / info.samplerate


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically. ``wav``: (N,) float32 in [-1, 1]."""
    from asr_adapt.fileio import atomic_open

    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """All audio files under ``root`` (recursive), sorted for determinism."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
