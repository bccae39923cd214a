"""Pseudo-label filters for noisy-student training, each registered by name.

A filter looks at one decoded record (``text``, ``lang``, ``duration``, ``avg_logprob``,
``compression_ratio``, and the expected locale ``expected_lang``) and returns the reason to
drop it, or ``None`` to keep it. Percentile filters need the whole locale's records and
are applied per locale by :func:`apply_filters`.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from asr_adapt.langtags import language_of


@dataclass(frozen=True)
class FilterConfig:
    min_confidence: float | None = field(default=None, metadata={"help": "drop if mean token log-prob is below this"})
    keep_top_percent: float | None = field(
        default=None, metadata={"help": "per locale, keep only this top percentage by confidence (0-100]"}
    )
    min_cps: float = field(default=2.0, metadata={"help": "minimum characters per second of audio"})
    max_cps: float = field(default=30.0, metadata={"help": "maximum characters per second of audio"})
    max_compression_ratio: float = field(
        default=2.4, metadata={"help": "drop repetitive text (zlib compression ratio above this)"}
    )
    require_lang_match: bool = field(default=True, metadata={"help": "drop if the predicted language differs"})

    def __post_init__(self) -> None:
        if self.keep_top_percent is not None and not 0 < self.keep_top_percent <= 100:
            raise ValueError("keep_top_percent must be in (0, 100]")
        if self.min_cps > self.max_cps:
            raise ValueError("min_cps must be <= max_cps")


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: len(utf-8 bytes) / len(zlib-compressed bytes)."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def drop_reason(rec: dict, cfg: FilterConfig) -> str | None:
    text = (rec.get("text") or "").strip()
    if not text:
        return "empty"
    if cfg.require_lang_match and rec.get("expected_lang") and rec.get("lang"):
        if language_of(rec["lang"]) != language_of(rec["expected_lang"]):
            return "lang_mismatch"
    cr = rec.get("compression_ratio")
    cr = compression_ratio(text) if cr is None else cr
    if cr > cfg.max_compression_ratio:
        return "repetitive"
    dur = rec.get("duration")
    if dur:
        cps = len(text.replace(" ", "")) / dur
        if cps < cfg.min_cps:
            return "too_few_chars"
        if cps > cfg.max_cps:
            return "too_many_chars"
    conf = rec.get("avg_logprob")
    if cfg.min_confidence is not None and conf is not None and conf < cfg.min_confidence:
        return "low_confidence"
    return None


def _confidence(rec: dict) -> float:
    conf = rec.get("avg_logprob")
    return float("-inf") if conf is None else float(conf)


def apply_filters(records: list[dict], cfg: FilterConfig) -> tuple[list[dict], dict[str, Counter]]:
    """Split records into kept ones and a per-locale Counter of drop reasons (plus ``kept``)."""
    report: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        loc = rec.get("expected_lang") or rec.get("lang") or "und"
        reason = drop_reason(rec, cfg)
        if reason:
            report[loc][reason] += 1
        else:
            survivors[loc].append(rec)
    kept: list[dict] = []
    for loc, recs in survivors.items():
        if cfg.keep_top_percent is not None:
            recs = sorted(recs, key=_confidence, reverse=True)
            n = max(1, round(len(recs) * cfg.keep_top_percent / 100))
            report[loc]["below_top_percent"] += len(recs) - n
            recs = recs[:n]
        report[loc]["kept"] += len(recs)
        kept.extend(recs)
    return sorted(kept, key=lambda r: r["utt_id"]), dict(report)


def report_markdown(report: dict[str, Counter]) -> str:
    reasons = sorted({r for c in report.values() for r in c if r != "kept"})
    head = "| locale | kept | " + " | ".join(reasons) + " | total |"
    lines = [head, "|" + "---|" * (len(reasons) + 3)]
    for loc in sorted(report):
        c = report[loc]
        total = sum(c.values())
        lines.append(f"| {loc} | {c['kept']} | " + " | ".join(str(c[r]) for r in reasons) + f" | {total} |")
    return "\n".join(lines) + "\n"
