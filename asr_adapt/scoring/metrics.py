"""Error counts: word and character alignments through jiwer, aggregation, Kaldi lines.

All counts come from ``jiwer.process_words`` / ``jiwer.process_characters`` so that the
totals here equal jiwer's on the same (normalised) text. Rates are errors / reference
length, with errors = substitutions + deletions + insertions (so they can exceed 100 %).

Character units: for locales whose script is written without spaces (CER locales) all
whitespace is removed before character alignment, since spaces there are a tokenisation
artefact (Thai/Chinese segmenters disagree) rather than something a listener hears. For
the other locales spaces count as characters, exactly as ``jiwer.cer`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jiwer


@dataclass(frozen=True)
class Counts:
    """Alignment counts for one unit type (words or characters) over some utterances."""

    ref: int = 0
    hits: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent (errors / reference units); 0 for an empty reference."""
        return 100.0 * self.errors / self.ref if self.ref else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.ref + other.ref,
            self.hits + other.hits,
            self.sub + other.sub,
            self.dele + other.dele,
            self.ins + other.ins,
        )

    def to_dict(self) -> dict:
        return {"ref": self.ref, "hits": self.hits, "sub": self.sub, "del": self.dele, "ins": self.ins,
                "errors": self.errors, "rate": self.rate}

    @classmethod
    def from_dict(cls, d: dict) -> Counts:
        return cls(d["ref"], d["hits"], d["sub"], d["del"], d["ins"])


def sum_counts(items) -> Counts:
    total = Counts()
    for c in items:
        total = total + c
    return total


# An aligned pair: (ref unit or None for an insertion, hyp unit or None for a deletion).
AlignedPair = tuple[str | None, str | None]


@dataclass(frozen=True)
class Alignment:
    """Counts plus, when requested, the aligned unit pairs of one utterance."""

    counts: Counts
    pairs: tuple[AlignedPair, ...] = field(default=())


def _discard(_items) -> None:
    return None


def _alignments(out, refs: list[list[str]], hyps: list[list[str]], keep_pairs: bool) -> list[Alignment]:
    result = []
    for ref, hyp, chunks in zip(refs, hyps, out.alignments):
        hits = sub = dele = ins = 0
        pairs: list[AlignedPair] = []
        # Building pairs costs time and memory; the trainer's fast path skips it.
        add = pairs.extend if keep_pairs else _discard
        for ch in chunks:
            r = ref[ch.ref_start_idx : ch.ref_end_idx]
            h = hyp[ch.hyp_start_idx : ch.hyp_end_idx]
            if ch.type == "equal":
                hits += len(r)
                add(zip(r, h))
            elif ch.type == "substitute":
                sub += len(r)
                add(zip(r, h))
            elif ch.type == "delete":
                dele += len(r)
                add((x, None) for x in r)
            elif ch.type == "insert":
                ins += len(h)
                add((None, x) for x in h)
            else:  # a jiwer version with a new chunk type: refuse rather than miscount
                raise RuntimeError(f"unknown jiwer alignment chunk type {ch.type!r}")
        result.append(Alignment(Counts(len(ref), hits, sub, dele, ins), tuple(pairs)))
    return result


def align_words(refs: list[str], hyps: list[str], keep_pairs: bool = False) -> list[Alignment]:
    """Word alignments of normalised ``refs``/``hyps`` (same length; refs non-empty)."""
    if not refs:
        return []
    out = jiwer.process_words(refs, hyps)
    return _alignments(out, out.references, out.hypotheses, keep_pairs)


def char_text(text: str, drop_spaces: bool) -> str:
    """The string whose characters are aligned for CER (see module docstring)."""
    return "".join(text.split()) if drop_spaces else text


def align_chars(refs: list[str], hyps: list[str], keep_pairs: bool = False) -> list[Alignment]:
    """Character alignments of ``refs``/``hyps`` as given (apply :func:`char_text` first)."""
    if not refs:
        return []
    out = jiwer.process_characters(refs, hyps)
    return _alignments(out, out.references, out.hypotheses, keep_pairs)


def kaldi_line(counts: Counts, metric: str = "WER") -> str:
    """Kaldi ``compute-wer`` summary line, e.g. ``%WER 25.00 [ 2 / 8, 1 ins, 0 del, 1 sub ]``."""
    return (
        f"%{metric} {counts.rate:.2f} [ {counts.errors} / {counts.ref}, "
        f"{counts.ins} ins, {counts.dele} del, {counts.sub} sub ]"
    )
