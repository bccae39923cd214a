"""Summaries of ``stream-eval`` output: per locale and operating point, WER and latency.

Reads every ``OUT/stream-<family>-<point>.jsonl`` with its ``OUT/offline-<family>.jsonl``
(written by :func:`asr_adapt.decoding.streaming_eval.run_stream_eval`) and writes
``OUT/stream-summary.{md,json,csv}`` and ``OUT/stream-wer-vs-latency.png``.

Per row (operating point x locale, plus ``all`` = pooled):

* ``wer`` / ``offline_wer`` / ``delta_wer``: headline error rate (WER, or CER for CER
  locales) of the committed streaming text, of the same model's offline decode, and the
  difference (positive: streaming is worse), in percent;
* ``delay``: per-word emission delay = emission time - when the *model* had the word's
  audio (definition per family in ``availability``), over all emitted words;
* ``ref_delay``: per-word emission delay against the *reference*: only correctly
  recognised words (Levenshtein alignment, as for WER), against an estimated reference
  word end: speech onset + (speech span) x (characters up to and including the word) /
  (characters of the reference) — a proportional alignment, no forced aligner;
* ``first_token``: first emission - speech onset (energy-based, see
  :func:`~asr_adapt.decoding.streaming_eval.speech_span`), over utterances;
* ``rtf``: wall time of the streaming simulation / audio duration (all re-decodes count).

Delays are p50/p90 in milliseconds (:func:`asr_adapt.scoring.streaming.summarise_latency`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from asr_adapt.decoding.streaming_eval import STREAM_SIMULATORS, offline_file
from asr_adapt.fileio import atomic_write, atomic_write_json, read_jsonl
from asr_adapt.scoring import FAST, get_normaliser, score
from asr_adapt.scoring.streaming import pair_correct_tokens, summarise_latency, utt_latency

SUMMARY_STEM = "stream-summary"
PLOT_FILE = "stream-wer-vs-latency.png"
COLUMNS = ("family", "label", "point", "locale", "n_utt", "metric", "wer", "offline_wer", "delta_wer",
           "delay_p50_ms", "delay_p90_ms", "ref_delay_p50_ms", "ref_delay_p90_ms",
           "first_token_p50_ms", "first_token_p90_ms", "rtf", "offline_rtf")


def reference_end_times(ref_units: list[str], onset: float, offset: float) -> list[float]:
    """Estimated end time (s) of each reference unit: proportional to its characters."""
    lens = np.cumsum([len(u) for u in ref_units], dtype=np.float64)
    if not len(lens) or lens[-1] == 0:
        return []
    return (onset + (offset - onset) * lens / lens[-1]).tolist()


def normalised_units(words, norm) -> tuple[list[str], list[float], list[float]]:
    """Normalise committed words one by one (``[[word, emit, avail], ...]``), keeping each
    resulting unit's times; words that normalise to nothing are dropped."""
    units, emit, avail = [], [], []
    for w, e, a in words:
        for unit in norm(w).split():
            units.append(unit)
            emit.append(e)
            avail.append(a)
    return units, emit, avail


def _split_name(stem: str) -> tuple[str, str] | None:
    """``stream-<family>-<label>`` -> (family, label) for a registered family."""
    rest = stem[len("stream-"):]
    for fam in sorted(STREAM_SIMULATORS.names(), key=len, reverse=True):
        if rest.startswith(fam + "-"):
            return fam, rest[len(fam) + 1:]
    return None


def summarise_dir(out_dir: str | Path, normaliser: str = "multilingual") -> list[dict]:
    """Summary rows (see module doc) for every stream file in ``out_dir``."""
    out = Path(out_dir)
    norm = get_normaliser(normaliser)
    rows: list[dict] = []
    for path in sorted(out.glob("stream-*.jsonl")):
        parsed = _split_name(path.stem)
        if parsed is None:
            continue
        family, label = parsed
        recs = read_jsonl(path)
        offline = {r["utt_id"]: r for r in read_jsonl(out / offline_file(family))}
        recs = [r for r in recs if r["utt_id"] in offline]
        if not recs:
            continue
        refs = {r["utt_id"]: r["ref"] for r in recs}
        langs = {r["utt_id"]: r["lang"] or "und" for r in recs}
        rep = score(refs, {r["utt_id"]: r["text"] for r in recs}, langs, replace(FAST, normaliser=normaliser),
                    baseline={u: offline[u]["text"] for u in refs}, name=label)
        model_lat, ref_lat = [], []
        for r in recs:
            onset, offset = r["speech"]
            emit = [w[1] for w in r["words"]]
            model_lat.append(utt_latency(r["utt_id"], langs[r["utt_id"]], emit, [w[2] for w in r["words"]],
                                         speech_onset=onset, processing_s=r["processing_s"],
                                         audio_s=r["duration"]))
            units, u_emit, _ = normalised_units(r["words"], norm)
            ref_units = norm(r["ref"]).split()
            e, a = pair_correct_tokens(units, u_emit, ref_units, reference_end_times(ref_units, onset, offset))
            ref_lat.append(utt_latency(r["utt_id"], langs[r["utt_id"]], e, a, speech_onset=onset))
        lat, rlat = summarise_latency(model_lat), summarise_latency(ref_lat)
        off_by_loc: dict[str, list[dict]] = {}
        for u in refs:
            off_by_loc.setdefault(langs[u], []).append(offline[u])
        off_by_loc["all"] = [offline[u] for u in refs]
        for loc, lrow in lat.items():
            srow = rep.pooled if loc == "all" else rep.locales[loc]
            offs = off_by_loc[loc]
            audio = sum(o["duration"] for o in offs)
            rows.append({
                "family": family, "label": label, "point": recs[0].get("point"), "locale": loc,
                "n_utt": lrow["n_utt"], "metric": srow.metric, "wer": srow.rate,
                "offline_wer": srow.comparison.baseline, "delta_wer": srow.comparison.delta,
                "delay_p50_ms": lrow["delay"]["p50_ms"], "delay_p90_ms": lrow["delay"]["p90_ms"],
                "ref_delay_p50_ms": rlat[loc]["delay"]["p50_ms"], "ref_delay_p90_ms": rlat[loc]["delay"]["p90_ms"],
                "first_token_p50_ms": lrow["first_token"]["p50_ms"], "first_token_p90_ms": lrow["first_token"]["p90_ms"],
                "rtf": lrow["rtf"], "offline_rtf": sum(o["processing_s"] for o in offs) / audio if audio else None,
                "availability": STREAM_SIMULATORS.get(family).availability,
            })
    rows.sort(key=lambda r: (r["family"], r["point"] or 0, r["locale"] == "all", r["locale"]))
    return rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return str(v)


def to_markdown(rows: list[dict]) -> str:
    """One table per family; a note with the ``model`` availability definition each."""
    parts = []
    for fam in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == fam]
        parts.append(f"### {fam}\n\n`delay` availability: {fr[0]['availability']}.\n")
        head = ["point", "locale", "utts", "WER", "offline", "Δ", "delay p50/p90 ms", "ref-delay p50/p90 ms",
                "first-token p50/p90 ms", "RTF", "offline RTF"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in fr:
            cells = [r["label"], r["locale"], r["n_utt"], f"{_fmt(r['wer'])} ({r['metric']})", _fmt(r["offline_wer"]),
                     f"{r['delta_wer']:+.1f}", f"{_fmt(r['delay_p50_ms'])} / {_fmt(r['delay_p90_ms'])}",
                     f"{_fmt(r['ref_delay_p50_ms'])} / {_fmt(r['ref_delay_p90_ms'])}",
                     f"{_fmt(r['first_token_p50_ms'])} / {_fmt(r['first_token_p90_ms'])}",
                     _fmt(r["rtf"]), _fmt(r["offline_rtf"])]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return buf.getvalue()


def write_summary(out_dir: str | Path, normaliser: str = "multilingual", plot: bool = True) -> dict[str, Path]:
    """Write ``stream-summary.{md,json,csv}`` (+ the WER-vs-latency PNG) into ``out_dir``."""
    out = Path(out_dir)
    rows = summarise_dir(out, normaliser)
    paths = {ext: out / f"{SUMMARY_STEM}.{ext}" for ext in ("md", "json", "csv")}
    atomic_write(paths["md"], to_markdown(rows))
    atomic_write_json(paths["json"], {"normaliser": normaliser, "rows": rows})
    atomic_write(paths["csv"], to_csv(rows))
    points = [r for r in rows if r["delay_p50_ms"] is not None]
    if plot and points:
        from asr_adapt.scoring.plots import plot_wer_vs_latency

        paths["png"] = plot_wer_vs_latency(
            # One line per (locale, family + the label's non-point part, e.g. the policy).
            [{"locale": r["locale"], "system": f"{r['family']} {r['label'].split('-', 1)[-1]}",
              "chunk": r["label"].split("-")[0],
              "latency_ms": r["delay_p50_ms"], "wer": r["wer"]} for r in points], out / PLOT_FILE)
    return paths


def load_summary(out_dir: str | Path) -> list[dict]:
    return json.loads((Path(out_dir) / f"{SUMMARY_STEM}.json").read_text(encoding="utf-8"))["rows"]
