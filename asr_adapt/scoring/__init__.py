"""Scoring: normalisers, per-locale WER/CER, bootstrap CIs, reports and plots.

Knows nothing of models: inputs are ``utt_id -> text`` maps and ``utt_id -> locale``.
Plot and report-file writers live in :mod:`asr_adapt.scoring.writers` (they import
matplotlib, which the training fast path :func:`dev_wer` does not need).
"""

from asr_adapt.scoring.engine import DEFAULT_CER_LANGUAGES, FAST, ScoreConfig, dev_wer, score, score_files
from asr_adapt.scoring.metrics import Counts, kaldi_line
from asr_adapt.scoring.normalise import NORMALISERS, Normaliser, get_normaliser
from asr_adapt.scoring.readers import (
    ScoringError,
    read_decode_jsonl,
    read_kaldi_dir,
    read_kaldi_text,
    read_transcripts,
)
from asr_adapt.scoring.report import Comparison, Interval, RowStats, ScoreReport, UttScore

__all__ = [
    "DEFAULT_CER_LANGUAGES", "FAST", "NORMALISERS", "Comparison", "Counts", "Interval", "Normaliser",
    "RowStats", "ScoreConfig", "ScoreReport", "ScoringError", "UttScore", "dev_wer", "get_normaliser",
    "kaldi_line", "read_decode_jsonl", "read_kaldi_dir", "read_kaldi_text", "read_transcripts", "score",
    "score_files",
]
