"""One decoding path: the same audio and bundle give identical transcripts through every entry
point — `asr-adapt decode`, the Python API, the server (HTTP), `asr-adapt pseudo-label` and
stream-eval's offline decode — for a row served by an adapter, a row whose locale has no
adapter (the base model), and a row without a locale (language identification)."""

from __future__ import annotations

import json

import httpx
import pytest
import soundfile as sf
import torch

from asr_adapt import api
from asr_adapt.cli.main import main as cli_main
from asr_adapt.data.kaldi import load_utterances
from tests.export import bundles

torch.set_num_threads(1)

# (utt_id, locale): two adapters, a locale the bundle has no adapter for, no locale at all.
ROWS = [("a-el", "el-GR"), ("b-uk", "uk-UA"), ("c-de", "de-DE"), ("d-auto", None)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    base = bundles.tiny_dir(root / "base")
    bundle = bundles.make_bundle(base, root / "lora", "lora", {"rank": 4})
    clips = bundles.clips() + [bundles.clips()[1][:20000]]
    manifest = root / "manifest.jsonl"
    lines = []
    for (uid, loc), wav in zip(ROWS, clips):
        path = root / f"{uid}.wav"
        sf.write(path, wav, 16000, subtype="FLOAT")
        lines.append(json.dumps({"utt_id": uid, "audio_filepath": str(path), "lang": loc, "text": "a b"}))
    manifest.write_text("\n".join(lines) + "\n")
    return base, bundle, manifest


def _texts(path) -> dict[str, str]:
    return {r["utt_id"]: r["text"] for r in map(json.loads, path.read_text().splitlines())}


def test_every_entry_point_gives_the_same_transcripts(setup, tmp_path):
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.decoding.streaming_eval import StreamEvalConfig, run_stream_eval
    from asr_adapt.serve import ASREngine, ServeConfig, create_app, serve_in_thread

    base, bundle, manifest = setup
    utts = load_utterances(manifest)
    ids = [u.utt_id for u in utts]

    assert cli_main(["decode", str(manifest), "-o", str(tmp_path / "cli"), "--model", str(base),
                     "--adapters", str(bundle), "--no-progress"]) == 0
    cli = _texts(tmp_path / "cli" / "hyp.jsonl")
    routed = {r["utt_id"]: r["adapter"] for r in map(json.loads, (tmp_path / "cli" / "hyp.jsonl").read_text().splitlines())}
    assert [routed[i] for i in ids[:3]] == ["el-GR", "uk-UA", None]

    rec = api.load_model(str(base), adapters=bundle)
    api_texts = dict(zip(ids, (h.text for h in rec.transcribe([u.audio for u in utts], lang=[u.lang for u in utts]))))

    engine = ASREngine(Transcriber.load("whisper", str(base), str(bundle)))
    with serve_in_thread(create_app(engine, ServeConfig())) as url, httpx.Client(base_url=url, timeout=120) as c:
        served = {}
        for u in utts:
            with open(u.audio, "rb") as f:
                form = {"locale": u.lang} if u.lang else {}
                served[u.utt_id] = c.post("/transcribe", files={"file": ("a.wav", f.read(), "audio/wav")},
                                          data=form).json()["text"]

    assert cli_main(["pseudo-label", str(manifest), "-o", str(tmp_path / "pl"), "--model", str(base),
                     "--adapters", str(bundle), "--no-lang-match", "--min-cps", "0", "--max-cps", "1e9",
                     "--max-compression-ratio", "1e9"]) == 0
    labelled = _texts(tmp_path / "pl" / "hyp.jsonl")

    run_stream_eval(Transcriber.load("whisper", str(base), str(bundle)), utts, tmp_path / "se",
                    StreamEvalConfig(step_ms=(1000,)), progress=False)
    offline = _texts(tmp_path / "se" / "offline-whisper.jsonl")

    assert len(set(cli.values())) > 1  # the rows decode differently: the comparison can fail
    for name, texts in (("api", api_texts), ("server", served), ("pseudo-label", labelled),
                        ("stream-eval offline", offline)):
        assert {i: texts[i] for i in ids} == {i: cli[i] for i in ids}, name
