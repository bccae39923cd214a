"""Per-locale dev WER/CER accumulated over a validation epoch (DDP-aware)."""

from __future__ import annotations

from collections import defaultdict

import jiwer
import torch.distributed as dist

from asr_adapt.scoring.metrics import align_words
from asr_adapt.scoring.normalise import get_normaliser


class LocaleAccumulator:
    """Collects (ref, hyp) pairs per locale and computes WER/CER with jiwer.

    References empty after normalisation are skipped rather than failing a whole
    validation: the data validator reports them up front. :meth:`compute` also leaves the
    per-utterance word and character errors in ``utt_errors`` (a merge policy bootstraps over them).
    """

    def __init__(self, normaliser: str = "multilingual") -> None:
        self.normalize = get_normaliser(normaliser)
        self.reset()

    def reset(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        # locale -> {"utt": ids, "err": word errors, "ref": reference words}, from the last compute()
        self.utt_errors: dict[str, dict[str, list]] = {}

    def add(self, utt_ids, refs, hyps, langs) -> None:
        self.rows.extend(zip(utt_ids, refs, hyps, [lang or "und" for lang in langs]))

    def compute(self, distributed: bool = False) -> dict[str, dict[str, float]]:
        rows = self.rows
        if distributed and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rows)
            # DistributedSampler pads by repeating utterances: count each utterance once.
            rows = list({r[0]: r for part in gathered for r in part}.values())
        by_loc: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for utt, ref, hyp, loc in rows:
            r = self.normalize(ref)
            if r.strip():
                by_loc[loc].append((utt, r, self.normalize(hyp)))
        out = {}
        self.utt_errors = {}
        for loc, items in sorted(by_loc.items()):
            utts, refs, hyps = (list(x) for x in zip(*items))
            words = [a.counts for a in align_words(refs, hyps)]
            errors, n_ref = [c.errors for c in words], [c.ref for c in words]
            c = jiwer.process_characters(refs, hyps)
            out[loc] = {"wer": 100.0 * sum(errors) / sum(n_ref), "cer": 100.0 * c.cer, "n": len(items)}
            chars = [_char_counts(r, h) for r, h in zip(refs, hyps)]
            self.utt_errors[loc] = {"utt": utts, "err": errors, "ref": n_ref,
                                    "cerr": [e for e, _ in chars], "cref": [n for _, n in chars]}
        return out


def _char_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(character edits, reference characters) of one utterance, as jiwer counts them for CER."""
    o = jiwer.process_characters([ref], [hyp])
    return o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits
