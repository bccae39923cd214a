"""``asr-adapt synth``: make the synthetic multilingual dictation corpus."""

from __future__ import annotations

import argparse
import sys
import time


def _split_list(values: list[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: lists may be space- or comma-separated."""
    return tuple(v for item in values for v in item.split(",") if v)


def _weights(text: str) -> dict[str, float]:
    """``"clean:0.5,noise:0.3"`` -> ``{"clean": 0.5, "noise": 0.3}`` (a bare name weighs 1)."""
    out = {}
    for item in text.split(","):
        name, _, w = item.partition(":")
        out[name.strip()] = float(w) if w else 1.0
    return out


def _run(args: argparse.Namespace) -> int:
    from asr_adapt.data.kaldi import validate
    from asr_adapt.data.locales import LOCALES
    from asr_adapt.data.synth import SynthConfig, synthesize
    from asr_adapt.data.tts_engines import ENGINES, available_engines

    if args.list_locales:
        for tag, spec in LOCALES.items():
            engines = ",".join(n for n, e in ENGINES.items() if e.all_voices(tag))
            print(f"{tag:8s} {spec.role:5s} {spec.script:9s} faker={spec.faker:6s} espeak={spec.voice} engines={engines}")
        return 0
    if args.list_engines:
        _list_engines(ENGINES, LOCALES)
        return 0
    if not args.out:
        print("asr-adapt synth: OUT is required", file=sys.stderr)
        return 2
    kw = {}
    if args.locales:
        kw["locales"] = _split_list(args.locales)
    if args.conditions:
        kw["conditions"] = _weights(args.conditions)
    if args.engines:
        engines = _split_list(args.engines)
        kw["engines"] = tuple(available_engines()) if engines == ("all",) else engines
    config = SynthConfig(
        utts_per_locale=args.utts_per_locale, train_utts_per_locale=args.train_utts_per_locale,
        tail_fraction=args.tail_fraction, splits=_split_list(args.splits),
        seed=args.seed, jobs=args.jobs, speakers_per_split=args.speakers_per_split, train_speakers=args.train_speakers,
        holdout_engine=args.holdout_engine, variety=args.variety, **kw,
    )
    t0 = time.perf_counter()
    try:
        counts = synthesize(args.out, config, overwrite=args.overwrite)
    except (FileExistsError, RuntimeError) as e:
        print(f"asr-adapt synth: {e}", file=sys.stderr)
        return 1
    bad = 0
    for split, per_locale in counts.items():
        problems = validate(f"{args.out}/{split}")
        bad += len(problems)
        for p in problems:
            print(f"{args.out}/{split}/{p}", file=sys.stderr)
        print(f"{split}: {sum(per_locale.values())} utterances, {len(per_locale)} locales, "
              f"{'valid' if not problems else f'{len(problems)} problems'}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 1 if bad else 0


def _list_engines(engines, locales) -> None:
    """One line per engine and locale it speaks: train and held-out voices, or why it cannot run."""
    for name, engine in engines.items():
        missing = engine.missing()
        print(f"{name}: {'available' if missing is None else 'unavailable: ' + missing}")
        for tag in locales.names():
            if engine.all_voices(tag):
                per_split = " ".join(f"{s}={','.join(engine.voices(tag, s)) or '-'}" for s in ("train", "dev", "test"))
                print(f"  {tag:8s} {per_split}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="synthesise a multilingual dictation corpus with espeak-ng (Kaldi data dirs)",
        description="Writes OUT/{train,dev,test,unlabelled} Kaldi data dirs (utt2lang, utt2dur, utt2spk, "
        "spk2utt, utt2condition; text except for unlabelled, whose transcripts go to "
        "OUT/unlabelled/.text_hidden) and 16 kHz mono WAVs under OUT/wav. Text is Faker's native-script "
        "words, names and addresses, lower-cased, without punctuation or digits. Speakers are a synthesis "
        "engine's voices x rate x pitch (espeak-ng by default; --engines adds flite and festival where "
        "installed); dev/test voices never occur in train, and OUT/<split>/utt2engine names each utterance's "
        "engine. Conditions: clean, additive noise at 5-20 dB SNR, telephone band (300-3400 Hz). "
        "--variety wide adds wide rate/pitch, pauses between words, synthetic room reverberation, "
        "white/pink/brown/babble noise at 0-25 dB SNR, and telephone/GSM/MP3/Opus channels, recorded "
        "per utterance in OUT/<split>/utt2variety; it comes on top of --conditions (pass --conditions clean "
        "for the variety stages alone). Same --seed, same bytes.",
    )
    p.add_argument("out", nargs="?", metavar="OUT", help="output directory")
    p.add_argument("--locales", nargs="+", metavar="TAG",
                   help="BCP-47 tags, space- or comma-separated (default: all; see --list-locales)")
    p.add_argument("--utts-per-locale", type=int, default=20, metavar="N",
                   help="utterances per locale and split for head locales (default: 20)")
    p.add_argument("--train-utts-per-locale", type=int, default=None, metavar="M",
                   help="head locales' train size if different from N (tail: M x tail fraction)")
    p.add_argument("--tail-fraction", type=float, default=0.25,
                   help="tail locales get this fraction of N in train; dev/test/unlabelled get N (default: 0.25)")
    p.add_argument("--splits", nargs="+", default=["train,dev,test,unlabelled"],
                   help="splits to write (default: train dev test unlabelled)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--speakers-per-split", type=int, default=4, help="speakers per locale and split (default: 4)")
    p.add_argument("--train-speakers", type=int, default=None,
                   help="speakers per locale in train (default: --speakers-per-split; with espeak-ng alone and no variety at most 112: 7 voice "
                        "variants x 4 rates x 4 pitches); dev/test/unlabelled are unaffected")
    p.add_argument("--conditions", metavar="NAME:W,...",
                   help="acoustic condition weights (default: clean:0.5,noise:0.3,telephone:0.2)")
    p.add_argument("--engines", nargs="+", metavar="NAME",
                   help="synthesis engines, space- or comma-separated, or 'all' (every one installed here); "
                        "speakers alternate between them (default: espeak-ng; see --list-engines)")
    p.add_argument("--holdout-engine", metavar="NAME", default=None,
                   help="keep this engine (one of --engines) out of train and unlabelled and use it alone in "
                        "dev/test, for the locales it speaks")
    p.add_argument("--variety", default="none", metavar="PRESET",
                   help="variety preset: none (default, the original corpus) or wide")
    p.add_argument("--overwrite", action="store_true", help="replace splits that already exist in OUT")
    p.add_argument("--list-locales", action="store_true", help="print the registered locales and exit")
    p.add_argument("--list-engines", action="store_true",
                   help="print the synthesis engines, whether they run here, and their voices per locale and split")
    p.set_defaults(func=_run)
