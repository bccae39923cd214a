"""Noisy-student pseudo-labelling: a teacher decodes unlabelled audio, filters keep the
trustworthy hypotheses, and the result is a Kaldi data dir the student trains on.

Output layout::

    OUT/hyp.jsonl, OUT/failed.tsv, OUT/shards/   the teacher's raw decode (resumable)
    OUT/data/                                    Kaldi data dir of kept pseudo-labels
    OUT/data/utt2conf                            confidence (mean token log-prob) per utterance
    OUT/report.md, OUT/report.json               kept / dropped counts per locale and reason
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from asr_adapt.data.kaldi import load_utterances, write_data_dir
from asr_adapt.fileio import atomic_write, atomic_write_json, write_lines
from asr_adapt.training.pl_filters import FilterConfig, apply_filters, report_markdown
from asr_adapt.training.predict import PredictSummary, predict

log = logging.getLogger(__name__)


def pseudo_label(
    transcriber,
    source: str | Path,
    out_dir: str | Path,
    filters: FilterConfig = FilterConfig(),
    batch_size: int = 8,
    trainer_kwargs: dict | None = None,
) -> tuple[PredictSummary, dict]:
    """Decode ``source`` (data dir / manifest / folder) with the teacher ``transcriber``
    (a :class:`~asr_adapt.decoding.service.Transcriber`) and write pseudo-labels.

    The teacher decodes with its locale forced from ``utt2lang`` when the data has one
    (the locale-match filter then compares against language identification only when
    the data has no locale).
    """
    out_dir = Path(out_dir)
    utts = load_utterances(source)
    summary = predict(transcriber, utts, out_dir, batch_size, trainer_kwargs)
    if not (out_dir / "hyp.jsonl").exists():  # non-zero ranks: rank 0 writes the outputs
        return summary, {}
    from asr_adapt.fileio import read_jsonl

    recs = read_jsonl(out_dir / "hyp.jsonl")
    kept, report = apply_filters(recs, filters)
    by_id = {u.utt_id: u for u in utts}
    # A row without a locale takes the one the teacher identified, so the data dir stays
    # uniformly labelled (utt2lang for every utterance).
    kept_utts = [dataclasses.replace(by_id[r["utt_id"]], text=r["text"], lang=by_id[r["utt_id"]].lang or r.get("lang"))
                 for r in kept if r["utt_id"] in by_id]
    write_data_dir(out_dir / "data", kept_utts)
    write_lines(out_dir / "data" / "utt2conf", (f"{r['utt_id']} {r['avg_logprob']:.4f}" for r in kept
                                                 if r.get("avg_logprob") is not None))
    rep = {loc: dict(c) for loc, c in report.items()}
    atomic_write_json(out_dir / "report.json", {"filters": dataclasses.asdict(filters), "locales": rep,
                                                "decoded": len(recs), "kept": len(kept_utts)})
    atomic_write(out_dir / "report.md", f"# Pseudo-labels: kept {len(kept_utts)} of {len(recs)}\n\n"
                 + report_markdown(report))
    return summary, rep
