"""The utterance record shared by every stage (data dirs, manifests, decoding, training)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Utterance:
    """One utterance: where its audio is, and what is known about it.

    ``audio`` is a file path or a Kaldi pipe (``"cmd |"``); ``offset``/``duration`` select a
    segment in seconds (``duration=None``: to the end). ``text`` is ``None`` for unlabelled
    audio. ``lang`` is a BCP-47 locale tag (``el-GR``) or a bare language (``el``).
    """

    utt_id: str
    audio: str
    text: str | None = None
    lang: str | None = None
    speaker: str | None = None
    duration: float | None = None
    offset: float = 0.0
    segment: bool = False  # True: read only [offset, offset + duration) (Kaldi segments)
    # Kaldi recording id of ``audio`` (wav.scp key) when known; kept so that a data dir with
    # ``segments`` round-trips with its recording ids instead of derived ones.
    recording: str | None = None

    def load(self, sample_rate: int = 16000) -> np.ndarray:
        """(N,) float32 mono samples; raises :class:`~asr_adapt.data.audio.AudioError`."""
        from asr_adapt.data.audio import load_audio

        seg = self.duration if self.segment else None
        return load_audio(self.audio, sample_rate, offset=self.offset, duration=seg)


