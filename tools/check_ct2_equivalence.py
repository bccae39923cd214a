#!/usr/bin/env python
"""Check that an imported Whisper model computes what CTranslate2 computes.

Synthesises short utterances in several languages (espeak-ng + sox, 16 kHz WAV in a
temporary directory), computes log-mel features once (WhisperFeatureExtractor, 30 s
padded), then compares on every utterance:

(a) encoder output of the converted Hugging Face model vs
    ``ctranslate2.models.Whisper(..., compute_type="float32").encode`` (relative L2 error);
(b) greedy token ids (forced language, transcribe, notimestamps, no token suppression,
    beam 1) of the Hugging Face model vs ``ctranslate2.models.Whisper.generate``.

Usage (defaults: the packaged whisper-base CTranslate2 files, converted into a temp dir):

    python tools/check_ct2_equivalence.py [--ct2 DIR ...] [--hf HF_DIR] [--threads 1]

Exit status 0 when every utterance passes both checks.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# (language code, espeak-ng voice, sentence): >= 10 utterances, >= 3 languages.
UTTERANCES: list[tuple[str, str, str]] = [
    ("en", "en-us", "The quick brown fox jumps over the lazy dog."),
    ("en", "en-gb+m3", "Please call me back tomorrow morning."),
    ("en", "en-us+f2", "It is raining in the city today."),
    ("de", "de", "Guten Morgen, wie geht es dir heute?"),
    ("de", "de+m3", "Ich möchte einen Kaffee bestellen."),
    ("de", "de+f2", "Das Wetter ist heute sehr schön."),
    ("es", "es", "Buenos días, ¿cómo estás?"),
    ("es", "es+m3", "Me gustaría reservar una mesa para dos."),
    ("es", "es+f2", "La biblioteca está cerrada los domingos."),
    ("el", "el", "Καλημέρα, τι κάνεις σήμερα;"),
    ("el", "el+m3", "Θα ήθελα ένα ποτήρι νερό."),
    ("el", "el+f2", "Ο καιρός είναι πολύ ωραίος."),
]
ENCODER_TOL = 1e-4
MAX_NEW_TOKENS = 96


def synthesise(tmp: Path) -> list[np.ndarray]:
    """espeak-ng -> sox (16 kHz mono) -> float32 waveforms."""
    import soundfile as sf

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install it (apt-get install espeak-ng sox)")
    wavs = []
    for i, (_, voice, text) in enumerate(UTTERANCES):
        raw, wav = tmp / f"{i}.raw.wav", tmp / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
        audio, sr = sf.read(wav, dtype="float32")
        assert sr == 16000
        wavs.append(audio)
    return wavs


def single_ct2_dir(sources: list[Path], tmp: Path) -> Path:
    """CTranslate2 needs one directory with a whole ``model.bin``: join parts, link the rest."""
    out = tmp / "ct2"
    out.mkdir()
    files = {p.name: p for d in reversed(sources) for p in d.iterdir() if p.is_file()}
    parts = sorted((n for n in files if n.startswith("model.bin.part")), key=lambda n: int(n.rsplit("part", 1)[1]))
    if "model.bin" in files:
        (out / "model.bin").symlink_to(files["model.bin"].resolve())
    else:
        with open(out / "model.bin", "wb") as f:
            for name in parts:
                with open(files[name], "rb") as part:
                    shutil.copyfileobj(part, f, 1 << 24)
    for name in ("config.json", "tokenizer.json", "vocabulary.json", "preprocessor_config.json"):
        if name in files:
            (out / name).symlink_to(files[name].resolve())
    return out


def hf_greedy(model, enc_out, prompt: list[int], eot: int, max_new: int) -> list[int]:
    """Plain argmax decoding with the KV cache; no suppression, no timestamp rules."""
    import inspect

    import torch
    from transformers.modeling_outputs import BaseModelOutput

    enc = BaseModelOutput(last_hidden_state=enc_out)
    # transformers 5 renamed the KV-cache argument from past_key_values to cache.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = torch.tensor([prompt])
    past, out = None, []
    with torch.inference_mode():
        for _ in range(max_new):
            o = model(encoder_outputs=enc, decoder_input_ids=ids, use_cache=True, **{cache_arg: past})
            past = getattr(o, cache_arg)
            nxt = int(o.logits[0, -1].argmax())
            if nxt == eot:
                break
            out.append(nxt)
            ids = torch.tensor([[nxt]])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ct2", nargs="*", type=Path, help="CTranslate2 dir(s); default: packaged whisper-base")
    ap.add_argument("--hf", type=Path, help="converted HF dir; default: convert --ct2 into a temp dir")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import ctranslate2
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    from asr_adapt.models.ct2_import import import_ct2
    from asr_adapt.models.resolver import PACKAGED, package_data_dirs

    torch.set_num_threads(args.threads)
    sources = args.ct2 or package_data_dirs(PACKAGED.get("whisper-base"), install=False)
    with tempfile.TemporaryDirectory(prefix="ct2eq-") as t:
        tmp = Path(t)
        hf_dir = args.hf or import_ct2(sources, tmp / "hf")
        ct2_dir = single_ct2_dir([Path(s) for s in sources], tmp)
        wavs = synthesise(tmp)

        fe = WhisperFeatureExtractor.from_pretrained(hf_dir)
        tok = WhisperTokenizerFast.from_pretrained(hf_dir)
        feats = fe(wavs, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)  # (B, 80, 3000)

        ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=args.threads)
        ct2_enc = ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True)
        ct2_enc_np = np.array(ct2_enc)  # (B, 1500, D)

        model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
        with torch.inference_mode():
            hf_enc = model.model.encoder(torch.from_numpy(feats)).last_hidden_state  # (B, 1500, D)

        sot, eot = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|endoftext|>")
        prompts = [
            [sot, tok.convert_tokens_to_ids(f"<|{lang}|>"), tok.convert_tokens_to_ids("<|transcribe|>"),
             tok.convert_tokens_to_ids("<|notimestamps|>")]
            for lang, _, _ in UTTERANCES
        ]  # fmt: skip
        ct2_res = ct2.generate(ct2_enc, prompts, beam_size=1, suppress_blank=False, suppress_tokens=[],
                               max_length=MAX_NEW_TOKENS + len(prompts[0]))  # fmt: skip

        rows, ok = [], True
        for i, (lang, voice, _) in enumerate(UTTERANCES):
            a, b = hf_enc[i].numpy(), ct2_enc_np[i]
            rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
            ref = list(ct2_res[i].sequences_ids[0])
            # Same number of steps CTranslate2 was allowed: both stop at EOT or at the cap.
            hyp = hf_greedy(model, hf_enc[i : i + 1], prompts[i], eot, max_new=MAX_NEW_TOKENS)
            same = hyp == ref
            ok &= same and rel < ENCODER_TOL
            rows.append((i, lang, voice, rel, len(ref), same, tok.decode(ref, skip_special_tokens=True).strip()))

    print(f"{'#':>2} {'lang':4} {'voice':9} {'enc rel.err':>11} {'#tok':>4} {'equal':5}  CT2 transcript")
    for i, lang, voice, rel, n, same, text in rows:
        print(f"{i:>2} {lang:4} {voice:9} {rel:11.2e} {n:>4} {str(same):5}  {text}")
    n_eq = sum(r[5] for r in rows)
    print(f"\nencoder max rel.err {max(r[3] for r in rows):.2e} (tol {ENCODER_TOL:g}); "
          f"greedy token ids equal on {n_eq}/{len(rows)} utterances "
          f"({', '.join(sorted({r[1] for r in rows}))})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
