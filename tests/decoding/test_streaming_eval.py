"""stream-eval: chunked transducer streaming, the Whisper LocalAgreement simulation,
latency arithmetic of the summary, and the CLI on a tiny saved transducer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_adapt.cli.main import main
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.decoding.streaming_eval import StreamEvalConfig, select_utterances, speech_span
from asr_adapt.decoding.streaming_summary import normalised_units, reference_end_times, summarise_dir
from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer, token_words
from asr_adapt.decoding.streaming_whisper import WhisperStreamingConfig, simulate_local_agreement
from asr_adapt.decoding.whisper_stream_step import whisper_decode_fn
from asr_adapt.fileio import read_jsonl
from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.models.transducer.tokenizer import CharTokenizer

SR = 16000
TEXTS = ["abc de", "fgh ij"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_transducer():
    """Random tiny transducer; blank is pushed down so that it emits tokens on noise."""
    torch.manual_seed(0)
    model = TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS)).eval()
    with torch.no_grad():
        model.joiner.out.bias[0] -= 3.0
    return model


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


# ------------------------------------------------------------------ transducer
@pytest.mark.parametrize("chunk_ms,left", [(40, -1), (160, -1), (320, 2)])
@pytest.mark.parametrize("seconds", [0.02, 0.45, 1.37])
def test_transducer_chunked_equals_streaming_transcribe(tiny_transducer, chunk_ms, left, seconds):
    m = tiny_transducer
    wav = noise(seconds, 7)
    s = stream_transducer(m, wav, None, TransducerStreamingConfig(chunk_ms=chunk_ms, left_context_chunks=left))
    opts = decoding_options(m, mode="streaming", chunk_ms=chunk_ms, left_context_chunks=left)
    h = transcribe_batch(m, [wav], [None], opts, route=None)[0]
    assert s.tokens == h.tokens
    assert s.frame_times == h.times
    if seconds > 1:
        assert len(s.tokens) > 5
    assert len(s.emit_times) == len(s.tokens) == len(s.avail_times)
    assert all(a <= b for a, b in zip(s.emit_times, s.emit_times[1:]))
    dur = len(wav) / SR
    assert all(e <= dur + chunk_ms / 1000 + 1e-9 for e in s.emit_times)
    # causal: a token is never emitted before its frame's audio has arrived
    assert all(e >= a - 1e-9 for e, a in zip(s.emit_times, s.avail_times))


def test_transducer_emission_times_follow_the_chunk_grid(tiny_transducer):
    wav = noise(1.37, 3)
    s = stream_transducer(tiny_transducer, wav, None, TransducerStreamingConfig(chunk_ms=320))
    dur = len(wav) / SR
    grid = {round(k * 0.32 + 0.015, 4) for k in range(1, 6)} | {round(dur, 4)}
    assert set(s.emit_times) <= grid
    # with 40 ms chunks a token is emitted the moment its frame is complete
    s1 = stream_transducer(tiny_transducer, wav, None, TransducerStreamingConfig(chunk_ms=40))
    assert s1.emit_times == pytest.approx(s1.avail_times)


def test_token_words_take_the_time_of_the_last_token():
    tok = CharTokenizer.train(TEXTS)
    ids = tok.encode("ab cd")
    emit = [0.1 * (i + 1) for i in range(len(ids))]
    words, (times,) = token_words(tok, ids, [emit])
    assert words == ["ab", "cd"]
    assert times == pytest.approx([0.2, 0.5])


# ------------------------------------------------------------------ whisper simulation
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
ENDS = [0.8, 1.3, 2.1, 2.6, 3.9, 4.4, 5.0, 5.7]  # scripted word end times (s)


def scripted_decoder(calls: list):
    """Fake decoder on an audio signal that *is* the sample index (so it knows where the
    buffer lies): hypothesis = the words whose audio has ended, plus one wrong guess at a
    word still being spoken (agreement must not commit it)."""

    def decode(audio, prompt, prefix):
        start, end = int(audio[0]) / SR, (int(audio[-1]) + 1) / SR
        calls.append((start, end, prompt, prefix))
        done = [w for w, e in zip(WORDS, ENDS) if e <= end + 1e-9]
        # the prompt and prefix are the committed words, in order
        assert list(prompt) + list(prefix) == done[: len(prompt) + len(prefix)]
        hyp = list(prefix) + done[len(prompt) + len(prefix):]
        if len(done) < len(WORDS):
            hyp.append(f"guess{int(end * 1000)}")  # changes every update
        return hyp

    return decode


@pytest.mark.parametrize("step_ms,max_buffer_s", [(500, 10.0), (500, 1.2), (1000, 2.0)])
def test_local_agreement_commits_final_text_once_in_order(step_ms, max_buffer_s):
    wav = np.arange(int(6.1 * SR), dtype=np.float64)
    calls: list = []
    cfg = WhisperStreamingConfig(step_ms=step_ms, max_buffer_s=max_buffer_s)
    r = simulate_local_agreement(wav, scripted_decoder(calls), cfg)
    assert r.words == WORDS
    assert all(a <= b for a, b in zip(r.emit_times, r.emit_times[1:]))
    step = step_ms / 1000
    for e, seen, end in zip(r.emit_times, r.first_seen, ENDS):
        assert end <= seen <= e
        # LocalAgreement-2: committed one update after it first appeared (or at the end)
        assert e == pytest.approx(min(seen + step, len(wav) / SR))
    if max_buffer_s < 10:
        assert r.trims, "a short max buffer must trim"
        assert any(start > 0 for start, *_ in calls)
        assert any(prompt for _, _, prompt, _ in calls)
        assert max(e - s for s, e, *_ in calls) <= max_buffer_s + 2 * step + 1e-9
    else:
        assert not r.trims and all(start == 0 for start, *_ in calls)


def test_local_agreement_flushes_at_the_whisper_window():
    wav = np.arange(int(31.0 * SR), dtype=np.float64)

    def undecided(audio, prompt, prefix):  # never agrees: nothing committed until a flush
        return list(prefix) + [f"w{len(audio)}"]

    r = simulate_local_agreement(wav, undecided, WhisperStreamingConfig(step_ms=1000, max_buffer_s=10.0))
    assert r.forced_flushes == 1 and len(r.words) == 2
    assert r.emit_times == pytest.approx([30.0, 31.0])


def test_whisper_decode_fn_forces_the_prefix(plain):
    dec = whisper_decode_fn(plain, "de-DE", decoding_options(plain, max_new_tokens=6))
    audio = noise(1.0, 1)
    first = dec(audio, (), ())
    assert first and all(isinstance(w, str) for w in first)
    prefix = ("hallo", "welt")
    assert tuple(dec(audio, ("guten", "tag"), prefix)[:2]) == prefix
    r = simulate_local_agreement(audio, dec, WhisperStreamingConfig(step_ms=500))
    assert r.updates == 2 and len(r.words) == len(r.emit_times) == len(r.first_seen)


def scripted_alignatt(calls: list):
    """Fake guided decoder on a sample-index signal: after the prefix it emits the words
    whose audio ended before the guard, each attending to its own end frame, and stops
    inside the next word (incomplete) when one is still being spoken."""
    from asr_adapt.decoding.streaming_whisper import StepOutput

    def step_fn(step):
        start, end = step.start / SR, step.end / SR
        calls.append((start, end, step.prompt, step.prefix, step.guard_frames))
        limit = end - (step.guard_frames or 0) * 0.02
        done = [w for w, e in zip(WORDS, ENDS) if e <= limit + 1e-9]
        assert list(step.prompt) + list(step.prefix) == done[: len(step.prompt) + len(step.prefix)]
        new = done[len(step.prompt) + len(step.prefix):]
        frames = [round((e - start) / 0.02) - 1 for e in ENDS[len(step.prompt) + len(step.prefix):][: len(new)]]
        speaking = len(done) < len(WORDS) and step.guard_frames is not None
        if speaking:  # the model starts the next word, then the guard stops it mid-word
            new, frames = new + ["par"], frames + [frames[-1] if frames else 0]
        return StepOutput(list(step.prefix) + new, frames, complete=not speaking)

    return step_fn


@pytest.mark.parametrize("step_ms,max_buffer_s", [(500, 10.0), (1000, 2.0)])
def test_alignatt_commits_heard_words_once_and_trims_at_their_frames(step_ms, max_buffer_s):
    from asr_adapt.decoding.streaming_whisper import AlignAttStream, run_stream

    wav = np.arange(int(6.1 * SR), dtype=np.float64)
    calls: list = []
    cfg = WhisperStreamingConfig(step_ms=step_ms, policy="alignatt", guard_ms=400, max_buffer_s=max_buffer_s)
    r = run_stream(AlignAttStream(cfg), wav, scripted_alignatt(calls))
    assert r.words == WORDS
    assert r.first_seen == pytest.approx(ENDS)  # the attended frame's end is the word's end
    for e, end in zip(r.emit_times, ENDS):  # committed at the first update that heard it past the guard
        assert end + 0.4 <= e + 1e-9 or e == pytest.approx(len(wav) / SR)
        assert e - (end + 0.4) < step_ms / 1000 + 1e-9
    assert calls[-1][4] is None and all(c[4] == 20 for c in calls[:-1])  # guard off only at the end
    if max_buffer_s < 10:
        assert r.trims and any(prompt for _, _, prompt, _, _ in calls)
        assert all(t in ENDS for t in r.trims)
    else:
        assert not r.trims


# ------------------------------------------------------------------ latency arithmetic
def test_reference_end_times_are_proportional_to_characters():
    assert reference_end_times(["ab", "cdef"], 1.0, 4.0) == pytest.approx([2.0, 4.0])
    from asr_adapt.scoring import get_normaliser

    units, emit, _ = normalised_units([["Ab,", 1.5, 1.0], ["--", 2.0, 1.9], ["cd", 3.0, 2.0]],
                                      get_normaliser("multilingual"))
    assert units == ["ab", "cd"] and emit == [1.5, 3.0]


def test_summary_on_constructed_records(tmp_path):
    rec = {"utt_id": "u1", "lang": "en-US", "ref": "ab cdef", "point": 320, "duration": 5.0, "speech": [1.0, 4.0],
           "text": "Ab cdef", "words": [["Ab", 1.5, 1.0], ["cdef", 4.5, 3.5]], "processing_s": 1.0}
    (tmp_path / "stream-transducer-chunk320-left-1.jsonl").write_text(json.dumps(rec) + "\n")
    off = {"utt_id": "u1", "lang": "en-US", "ref": "ab cdef", "text": "ab x", "duration": 5.0, "processing_s": 0.5}
    (tmp_path / "offline-transducer.jsonl").write_text(json.dumps(off) + "\n")
    rows = summarise_dir(tmp_path)
    assert [r["locale"] for r in rows] == ["en-US", "all"]
    r = rows[0]
    assert (r["wer"], r["offline_wer"], r["delta_wer"]) == (0.0, 50.0, -50.0)
    assert r["delay_p50_ms"] == pytest.approx(750.0) and r["delay_p90_ms"] == pytest.approx(950.0)
    assert r["ref_delay_p50_ms"] == pytest.approx(0.0)  # -0.5 s and +0.5 s
    assert r["first_token_p50_ms"] == pytest.approx(500.0)
    assert r["rtf"] == pytest.approx(0.2) and r["offline_rtf"] == pytest.approx(0.1)


def test_speech_span_and_selection():
    wav = np.zeros(SR, dtype=np.float32)
    wav[4000:12000] = 0.5
    assert speech_span(wav) == (0.25, 0.75)
    from asr_adapt.data.types import Utterance

    utts = [Utterance(f"{loc}-{i}", "x.wav", "t", loc) for loc in ("b", "a") for i in range(3)]
    assert [u.utt_id for u in select_utterances(utts, 2)] == ["a-0", "a-1", "b-0", "b-1"]
    with pytest.raises(ValueError):
        StreamEvalConfig(chunk_ms=(100,))


# ------------------------------------------------------------------ CLI
@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rows = [("de-DE-u1", "de-DE", "abc de", 1.1), ("de-DE-u2", "de-DE", "fgh", 0.7), ("es-ES-u1", "es-ES", "ij", 0.9)]
    for i, (utt, _, _, sec) in enumerate(rows):
        sf.write(tmp_path / f"{utt}.wav", noise(sec, i), SR, subtype="PCM_16")
    (d / "wav.scp").write_text("".join(f"{u} {tmp_path / (u + '.wav')}\n" for u, *_ in rows))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, t, _ in rows))
    (d / "utt2lang").write_text("".join(f"{u} {loc}\n" for u, loc, *_ in rows))
    (d / "utt2spk").write_text("".join(f"{u} {u}\n" for u, *_ in rows))
    return d


def test_cli_stream_eval_transducer(tmp_path, data_dir, tiny_transducer, capsys):
    model_dir = tmp_path / "model"
    tiny_transducer.save_pretrained(model_dir)
    out = tmp_path / "out"
    args = ["stream-eval", str(data_dir), "-o", str(out), "--backbone", "transducer", "--model", str(model_dir),
            "--chunk-ms", "160,320", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    recs = read_jsonl(out / "stream-transducer-chunk160-left-1.jsonl")
    assert sorted(r["utt_id"] for r in recs) == ["de-DE-u1", "de-DE-u2", "es-ES-u1"]
    for r in recs:
        emits = [w[1] for w in r["words"]]
        assert emits == sorted(emits) and all(e <= r["duration"] + 0.16 + 1e-6 for e in emits)
    assert len(read_jsonl(out / "offline-transducer.jsonl")) == 3
    summary = json.loads((out / "stream-summary.json").read_text())["rows"]
    assert {(r["label"], r["locale"]) for r in summary} == {
        (f"chunk{c}-left-1", loc) for c in (160, 320) for loc in ("de-DE", "es-ES", "all")}
    assert (out / "stream-summary.md").read_text().count("chunk320-left-1") == 3
    assert (out / "stream-summary.csv").read_text().startswith("family,label,point,locale")
    assert (out / "stream-wer-vs-latency.png").stat().st_size > 0
    # resumable: a re-run decodes nothing and leaves one line per utterance
    before = (out / "stream-transducer-chunk160-left-1.jsonl").read_text()
    assert main(args) == 0
    assert (out / "stream-transducer-chunk160-left-1.jsonl").read_text() == before
    # clear errors
    bad = ["stream-eval", str(data_dir), "-o", str(out), "--model", str(model_dir), "--no-progress"]
    assert main(bad + ["--backbone", "transducer", "--chunk-ms", "100"]) == 2
    assert main(bad + ["--backbone", "nope"]) == 2
    assert "known: " in capsys.readouterr().err


def test_cross_attention_probe_matches_the_models_own_attention_weights(tokenizer):
    """The AlignAtt probe (query hook + cached keys) equals the cross-attention weights the
    model itself returns (eager attention), averaged over the alignment heads."""
    from asr_adapt.decoding.whisper_stream_step import CrossAttentionProbe, alignment_heads
    from asr_adapt.models.whisper import WhisperBackbone, tiny_config

    torch.manual_seed(3)
    bb = WhisperBackbone.from_config(tiny_config(init_std=0.3, attn_implementation="eager"), tokenizer)
    enc = bb.encode(bb.features([noise(1.3, 2), noise(0.7, 4)]))
    ids = torch.tensor([bb.prompt("de") + [400, 500]] * 2)
    heads = alignment_heads(bb)
    probe = CrossAttentionProbe(bb, heads)
    cache = bb.new_cache()
    with torch.no_grad(), probe.attached():
        bb.decoder_logits(ids, enc, cache)
        got = probe.peak_frames(cache)
        ref = bb.decoder(input_ids=ids, encoder_hidden_states=enc, output_attentions=True)
    weights = sum(ref.cross_attentions[layer][:, h, -1] for layer, h in heads)  # (B, T)
    assert got.tolist() == weights.argmax(-1).tolist()


def test_a_batch_of_steps_answers_each_row_as_if_alone(plain):
    """Rows of different windows, option sets, prompt and prefix lengths and AlignAtt guards
    share one decoder batch (padding masked), and each gets exactly its own answer."""
    from asr_adapt.decoding.streaming_whisper import WhisperStep
    from asr_adapt.decoding.whisper_stream_step import StepRow, decode_steps

    short = decoding_options(plain, max_new_tokens=8, min_window_s=1.0)
    longer = decoding_options(plain, max_new_tokens=8, min_window_s=3.0)
    specs = [((), (), short, None), (("guten", "tag"), ("hallo",), longer, 12), ((), ("a", "b", "c"), short, None),
             (("x",), (), short, 12), ((), (), longer, None)]
    rows = []
    for i, (prompt, prefix, opts, guard) in enumerate(specs):
        a = noise(1 + 0.7 * i, 20 + i)
        rows.append(StepRow(WhisperStep(a, prompt, prefix, 0, len(a), False, guard), "de", None, opts))
    together = decode_steps(plain, rows)
    assert [(o.words, o.frames, o.complete) for o in together] == [
        (o.words, o.frames, o.complete) for o in (decode_steps(plain, [r])[0] for r in rows)]
    assert together[1].frames and together[0].frames is None


@pytest.mark.parametrize("left", [-1, 2])
def test_transducer_streams_at_different_points_share_a_batch(tiny_transducer, left):
    """Live streams that started at different times and receive different packet sizes run
    their pieces in shared batches and emit exactly what each emits streamed alone."""
    from asr_adapt.decoding.streaming_transducer import TransducerStream, run_pieces

    m = tiny_transducer
    cfg = TransducerStreamingConfig(chunk_ms=160, left_context_chunks=left)
    wavs = [noise(s, 40 + i) for i, s in enumerate((2.3, 1.7, 3.1, 0.9))]
    alone = [stream_transducer(m, w, None, cfg) for w in wavs]
    streams = [TransducerStream(m, None, cfg) for _ in wavs]
    sent, starts, tick, batched = [0] * 4, [0, 3, 5, 9], 0, 0
    while not all(s.done for s in streams):
        for i, (s, w) in enumerate(zip(streams, wavs)):
            if tick >= starts[i] and not s.closed:
                n = 1600 * (i + 1)
                s.push(w[sent[i] : sent[i] + n])
                sent[i] += n
                if sent[i] >= len(w):
                    s.close()
        work = [(s, p) for s in streams if (p := s.next_piece()) is not None]
        batched += len(work) > 1
        run_pieces(m, work)
        tick += 1
    assert batched > 5
    for a, s in zip(alone, streams):
        assert (s.out.tokens, s.out.frame_times, s.out.emit_times) == (a.tokens, a.frame_times, a.emit_times)
