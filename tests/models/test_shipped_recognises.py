"""The shipped transducer foundation recognises speech, through every search path.

A guard against a search broken the same way in every path (batched, streaming, chunked
live streams): then the paths still agree with each other and only the error rate shows it.
Synthesised test-voice speech of two head locales the foundation was pretrained on; the
bound is loose (its published head test CER is 9.1 % full / 12.2 % streaming).
"""

from __future__ import annotations

import dataclasses
import shutil

import jiwer
import pytest
import torch

from asr_adapt.data.kaldi import load_utterances
from asr_adapt.data.synth import SynthConfig, synthesize
from asr_adapt.decoding.decoders import transcribe_batch
from asr_adapt.decoding.service import Transcriber
from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech")
    synthesize(out, SynthConfig(locales=("en-US", "de-DE"), utts_per_locale=3, jobs=1, speakers_per_split=2,
                                splits=("test",)), progress=False)
    return load_utterances(out / "test")


def cer(refs, hyps) -> float:
    return 100 * jiwer.cer([r.lower() for r in refs], [h.lower() for h in hyps])


def test_shipped_transducer_recognises_speech_in_every_search(speech):
    torch.set_num_threads(1)
    t = Transcriber.load("transducer", "transducer-synth-compact")
    wavs, langs, refs = [u.load() for u in speech], [u.lang for u in speech], [u.text for u in speech]
    base = t.options_for(None)
    full = transcribe_batch(t.backbone, wavs, langs, dataclasses.replace(base, mode="full"), route=[None] * len(wavs))
    streamed = transcribe_batch(t.backbone, wavs, langs, dataclasses.replace(base, mode="streaming", chunk_ms=320),
                                route=[None] * len(wavs))
    live = [t.backbone.tokenizer.decode(stream_transducer(t.backbone, w, None, TransducerStreamingConfig(320)).tokens)
            for w in wavs]
    assert cer(refs, [h.text for h in full]) < 30
    assert cer(refs, [h.text for h in streamed]) < 35
    assert [h.text for h in streamed] == live
