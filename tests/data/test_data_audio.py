"""Audio loading through data dirs: pipes, broken files, channel/rate conversion, segments."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from asr_adapt.data.audio import AudioError, load_audio, write_wav
from asr_adapt.data.kaldi import read_data_dir, write_data_dir
from asr_adapt.data.types import Utterance


def scp_dir(tmp_path, entries: dict[str, str], text: dict[str, str] | None = None):
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in sorted(entries.items())))
    if text is not None:
        (d / "text").write_text("".join(f"{k} {v}\n" for k, v in sorted(text.items())))
    return {u.utt_id: u for u in read_data_dir(d)}


def test_working_pipes(tmp_path, make_wav):
    wav = make_wav("a.wav", seconds=0.5)
    entries = {"cat": f"cat {wav} |"}
    if shutil.which("sox"):
        entries["sox"] = f"sox {wav} -t wav - |"
    utts = scp_dir(tmp_path, entries)
    direct = load_audio(wav)
    for u in utts.values():
        assert np.allclose(u.load(), direct, atol=1e-4)
        assert len(u.load()) == 8000


def test_failing_pipe_names_the_command(tmp_path):
    utts = scp_dir(tmp_path, {"bad": f"cat {tmp_path}/missing.wav |", "empty": "true |"})
    with pytest.raises(AudioError, match=r"pipe command failed \(exit 1\): cat: .*missing.wav"):
        utts["bad"].load()
    with pytest.raises(AudioError, match="pipe command produced no audio"):
        utts["empty"].load()


def test_broken_files(tmp_path, make_wav):
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio\n")
    good = make_wav("good.wav", seconds=1.0)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:20000])  # header claims 32000 data bytes
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(good.read_bytes()[:30])
    utts = scp_dir(tmp_path, {"zero": str(zero), "text": str(text), "trunc": str(truncated),
                              "hdr": str(header_only), "gone": str(tmp_path / "gone.wav")})
    cases = {"zero": "empty file", "text": "unreadable", "trunc": "truncated WAV", "hdr": "unreadable or truncated",
             "gone": "file not found"}
    for utt, reason in cases.items():
        with pytest.raises(AudioError, match=reason) as err:
            utts[utt].load()
        assert err.value.path == utts[utt].audio


def test_streamed_wav_with_placeholder_size_is_not_truncated(tmp_path, make_wav):
    # A WAV written to a pipe carries 0x7FFFFFFF-ish sizes; it must still load fully.
    data = bytearray(make_wav("a.wav", seconds=0.25).read_bytes())
    data[4:8] = (0x7FFFF000).to_bytes(4, "little")
    data[40:44] = (0x7FFFF000).to_bytes(4, "little")
    (tmp_path / "s.wav").write_bytes(bytes(data))
    assert len(load_audio(tmp_path / "s.wav")) == 4000


def test_stereo_is_downmixed(tmp_path, make_wav):
    stereo = make_wav("st.wav", seconds=0.5, channels=2)
    y = scp_dir(tmp_path, {"st": str(stereo)})["st"].load()
    mono = load_audio(make_wav("mono.wav", seconds=0.5))
    assert y.ndim == 1 and len(y) == 8000
    assert np.allclose(y, mono * 0.75, atol=2e-4)  # mean of amplitudes 0.5 and 0.25


@pytest.mark.parametrize("sr", [8000, 48000])
def test_other_rates_are_resampled(tmp_path, make_wav, sr):
    path = make_wav(f"r{sr}.wav", seconds=0.75, sr=sr, freq=300.0)
    y = scp_dir(tmp_path, {"r": str(path)})["r"].load()
    assert len(y) == 12000
    # The tone survives: strongest FFT bin at 300 Hz.
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(300.0, abs=2.0)


def test_segments_with_offsets(tmp_path):
    sr = 16000
    ramp = (np.arange(3 * sr) / (3 * sr) * 0.8).astype(np.float32)  # sample value encodes its time
    write_wav(tmp_path / "rec.wav", ramp)
    d = tmp_path / "segdir"
    write_data_dir(d, [
        Utterance("r-a", str(tmp_path / "rec.wav"), text="a", duration=1.0, offset=0.5, segment=True, recording="rec"),
        Utterance("r-b", str(tmp_path / "rec.wav"), text="b", duration=0.25, offset=2.0, segment=True, recording="rec"),
    ])
    utts = {u.utt_id: u for u in read_data_dir(d)}
    a, b = utts["r-a"].load(), utts["r-b"].load()
    assert len(a) == 16000 and len(b) == 4000
    assert a[0] == pytest.approx(0.5 / 3 * 0.8, abs=1e-3)
    assert b[-1] == pytest.approx(2.25 / 3 * 0.8, abs=1e-3)
    past_end = Utterance("r-c", str(tmp_path / "rec.wav"), duration=1.0, offset=5.0, segment=True)
    with pytest.raises(AudioError, match="zero-length audio"):
        past_end.load()


def test_empty_transcript_reads_as_empty_string(tmp_path, make_wav):
    wav = make_wav("a.wav", 0.1)
    utts = scp_dir(tmp_path, {"u1": str(wav), "u2": str(wav)}, text={"u1": "", "u2": "hello"})
    assert utts["u1"].text == "" and utts["u2"].text == "hello"
