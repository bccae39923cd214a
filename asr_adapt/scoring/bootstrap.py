"""Seeded bootstrap over utterances: confidence intervals and paired comparisons.

Resampling unit is the utterance (errors inside one utterance are correlated, so
resampling words would understate the spread). A resample's error rate is
``sum(errors) / sum(ref units)`` over the drawn utterances, i.e. a micro rate, the same
statistic as the point estimate.

Across locales the bootstrap is stratified: each locale is resampled within itself with
its own generator, seeded from ``(seed, crc32(locale))`` so that a locale's draws do not
depend on which other locales are present or their order. The macro average and the
pooled rate of resample ``b`` are computed from the locales' resample ``b``.

Paired bootstrap (Koehn 2004; Bisani & Ney 2004): the system and the baseline are scored on
the same drawn utterances; the probability of improvement is the fraction of resamples in
which the system's rate is strictly lower than the baseline's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

# Index matrices are drawn in blocks so that memory stays ~16 MB whatever the corpus size.
_BLOCK_ELEMS = 2_000_000


def locale_rng(seed: int, locale: str) -> np.random.Generator:
    """A generator for ``locale`` that depends only on ``seed`` and the locale name."""
    return np.random.default_rng([int(seed), zlib.crc32(locale.encode("utf-8"))])


@dataclass(frozen=True)
class Resamples:
    """Per-resample sums for one locale: ``errors[k]`` is (B,) for system k; ``ref`` is (B,)."""

    errors: tuple[np.ndarray, ...]
    ref: np.ndarray


def resample_sums(
    errors: list[np.ndarray], ref: np.ndarray, n_boot: int, rng: np.random.Generator
) -> Resamples:
    """Draw ``n_boot`` utterance resamples (with replacement) shared by all systems.

    ``errors``: one (N,) array of per-utterance error counts per system (paired: same
    utterances, same order); ``ref``: (N,) reference lengths. Returns (B,) sums.
    """
    n = len(ref)
    if n == 0:
        raise ValueError("cannot bootstrap zero utterances")
    out_err = [np.empty(n_boot, dtype=np.float64) for _ in errors]
    out_ref = np.empty(n_boot, dtype=np.float64)
    block = max(1, _BLOCK_ELEMS // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out_ref[start:stop] = ref[idx].sum(axis=1)
        for k, e in enumerate(errors):
            out_err[k][start:stop] = e[idx].sum(axis=1)
    return Resamples(tuple(out_err), out_ref)


def rates(errors: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Percent error rates of resamples (a resample with no reference units scores 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ref > 0, 100.0 * errors / np.maximum(ref, 1), 0.0)
    return r


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``samples`` (B,)."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def prob_improvement(system: np.ndarray, baseline: np.ndarray) -> float:
    """Fraction of paired resamples in which the system's rate is below the baseline's."""
    return float(np.mean(system < baseline))
