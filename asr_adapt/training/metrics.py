"""Per-locale dev WER/CER accumulated over a validation epoch (DDP-aware)."""

from __future__ import annotations

from collections import defaultdict

import jiwer
import torch.distributed as dist

from asr_adapt.scoring.normalise import get_normaliser


class LocaleAccumulator:
    """Collects (ref, hyp) pairs per locale and computes WER/CER with jiwer.

    References empty after normalisation are skipped (counted in ``skipped``) rather
    than failing a whole validation: the data validator reports them up front.
    """

    def __init__(self, normaliser: str = "multilingual") -> None:
        self.normalize = get_normaliser(normaliser)
        self.reset()

    def reset(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, utt_ids, refs, hyps, langs) -> None:
        self.rows.extend(zip(utt_ids, refs, hyps, [lang or "und" for lang in langs]))

    def compute(self, distributed: bool = False) -> dict[str, dict[str, float]]:
        rows = self.rows
        if distributed and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rows)
            # DistributedSampler pads by repeating utterances: count each utterance once.
            rows = list({r[0]: r for part in gathered for r in part}.values())
        by_loc: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for _, ref, hyp, loc in rows:
            r = self.normalize(ref)
            if r.strip():
                by_loc[loc].append((r, self.normalize(hyp)))
        out = {}
        for loc, pairs in sorted(by_loc.items()):
            refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
            w = jiwer.process_words(refs, hyps)
            c = jiwer.process_characters(refs, hyps)
            out[loc] = {"wer": 100.0 * w.wer, "cer": 100.0 * c.cer, "n": len(pairs)}
        return out
