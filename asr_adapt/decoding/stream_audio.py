"""The audio side of a live stream, shared by every streaming policy.

Samples are pushed as they arrive; ``decoded`` marks how far the model has got; the past
that no step will read again is released, so a stream of any length holds only its
current buffer.
"""

from __future__ import annotations

import numpy as np


class PushedAudio:
    """Mixin: ``push``/``close`` for the client side, ``_samples``/``_release`` for the policy.

    Positions are absolute sample indices in the stream (16 kHz).
    """

    sample_rate = 16000

    def _init_audio(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)  # samples from ``_offset`` on
        self._offset = 0
        self.received = 0  # samples pushed so far
        self.decoded = 0  # samples the model has consumed so far
        self.closed = False

    def push(self, samples: np.ndarray) -> None:
        """Append (N,) float32 16 kHz samples."""
        if self.closed:
            raise RuntimeError("stream already closed")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, samples]) if len(self._audio) else samples.copy()
        self.received += len(samples)

    def close(self) -> None:
        """No more audio: the remaining steps decode what is buffered, then the stream is done."""
        self.closed = True

    @property
    def buffered_s(self) -> float:
        """Audio received but not decoded yet (s): how far behind the model is."""
        return (self.received - self.decoded) / self.sample_rate

    def _samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) of the stream (lo must not be released yet)."""
        return self._audio[lo - self._offset : hi - self._offset]

    def _release(self, before: int) -> None:
        """Forget the samples before ``before``: no step reads them again."""
        if before > self._offset:
            self._audio = self._audio[before - self._offset :]
            self._offset = before
