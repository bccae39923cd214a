"""icefall-style detail files: per-utterance alignments and the most frequent errors.

Alignments are in each locale's headline unit (words, or characters for CER locales).
A correct unit is written as itself, a substitution as ``(ref->hyp)``, a deletion as
``(ref->*)`` and an insertion as ``(*->hyp)``.
"""

from __future__ import annotations

from collections import Counter

from asr_adapt.scoring.report import ScoreReport, UttScore


def format_pairs(pairs) -> str:
    """``[("a","a"), ("b","x"), ("c",None), (None,"d")]`` -> ``a (b->x) (c->*) (*->d)``."""
    out = []
    for r, h in pairs:
        if r == h:
            out.append(r)
        else:
            out.append(f"({'*' if r is None else r}->{'*' if h is None else h})")
    return " ".join(out)


def per_utt_lines(report: ScoreReport) -> list[str]:
    """One header plus one line per utterance, sorted by locale then utterance id."""
    lines = [
        f"# {report.name}: per-utterance alignments (normaliser {report.normaliser})",
        "# corr | (ref->hyp) substitution | (ref->*) deletion | (*->hyp) insertion",
    ]
    for u in sorted(report.utterances, key=lambda u: (u.locale, u.utt_id)):
        c = u.headline
        tag = " MISSING-HYP" if u.missing else ""
        body = format_pairs(u.pairs) if u.pairs else f"ref={u.ref!r} hyp={u.hyp!r}"
        lines.append(f"{u.utt_id}\t{u.locale}\t%{u.metric.upper()} {c.rate:.2f} "
                     f"[ {c.errors} / {c.ref} ]{tag}\t{body}")
    return lines


def top_errors(utts: list[UttScore], top_n: int = 20) -> dict[str, list[tuple[int, str]]]:
    """The ``top_n`` most frequent substitutions, deletions and insertions with counts."""
    subs: Counter = Counter()
    dels: Counter = Counter()
    ins: Counter = Counter()
    for u in utts:
        for r, h in u.pairs:
            if r is None:
                ins[h] += 1
            elif h is None:
                dels[r] += 1
            elif r != h:
                subs[f"{r} -> {h}"] += 1

    def top(c: Counter) -> list[tuple[int, str]]:
        # Ties broken by the text so that the file is stable across runs.
        return [(n, k) for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]

    return {"substitutions": top(subs), "deletions": top(dels), "insertions": top(ins)}


def error_lines(report: ScoreReport, top_n: int = 20) -> list[str]:
    """Top errors per locale, in the layout of icefall's ``errs-*.txt`` sections."""
    lines = [f"# {report.name}: top {top_n} errors per locale (normaliser {report.normaliser})"]
    by_loc: dict[str, list[UttScore]] = {}
    for u in report.utterances:
        by_loc.setdefault(u.locale, []).append(u)
    for loc in sorted(by_loc):
        utts = by_loc[loc]
        unit = "char" if utts[0].metric == "cer" else "word"
        lines += ["", f"=== {loc} ({unit} units) {report.locales[loc].kaldi_line()}"]
        if not any(u.pairs for u in utts):
            lines.append("(alignments not kept: scored with details=False)")
            continue
        errs = top_errors(utts, top_n)
        lines.append("SUBSTITUTIONS: count ref -> hyp")
        lines += [f"{n:6d}   {k}" for n, k in errs["substitutions"]]
        lines.append("DELETIONS: count ref")
        lines += [f"{n:6d}   {k}" for n, k in errs["deletions"]]
        lines.append("INSERTIONS: count hyp")
        lines += [f"{n:6d}   {k}" for n, k in errs["insertions"]]
    return lines
