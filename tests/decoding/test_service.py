"""The decode service's policies: the one fallback rule, per-row options, language identification."""

from __future__ import annotations

import logging

import pytest
import torch

from asr_adapt.adapters.locales import _resolve, resolve_locale
from asr_adapt.decoding.service import LanguageId, Transcriber
from tests.export import bundles

torch.set_num_threads(1)


@pytest.mark.parametrize("locale,available,siblings,expected", [
    ("el-GR", {"el-GR", "uk-UA"}, {}, "el-GR"),                # 1. exact
    ("EL_gr", {"el-GR"}, {}, "el-GR"),                          # 1. case and separator insensitive
    ("el-CY", {"el", "uk-UA"}, {}, "el"),                       # 2. the language's adapter
    ("el", {"el-GR", "uk-UA"}, {}, "el-GR"),                    # 2. a bare language: its one adapter
    ("pt", {"pt-BR", "pt-PT"}, {}, None),                       # 2. ... ambiguous: none
    ("el-CY", {"el-GR"}, {}, None),                             # another locale: not without a sibling
    ("el-CY", {"el-GR"}, {"el-CY": "el-GR"}, "el-GR"),          # 3. configured sibling (locale)
    ("pt", {"pt-BR", "pt-PT"}, {"pt": "pt-BR"}, "pt-BR"),       # 3. configured sibling (language)
    ("fr-FR", {"el-GR"}, {"fr-FR": "xx"}, None),                # a sibling that is not in the bundle
    (None, {"el-GR"}, {}, None),
])
def test_the_one_fallback_rule(locale, available, siblings, expected):
    assert resolve_locale(locale, available, siblings) == expected


def test_no_adapter_is_warned_once_per_locale(caplog):
    _resolve.cache_clear()
    with caplog.at_level(logging.WARNING, logger="asr_adapt.adapters.locales"):
        for _ in range(3):
            resolve_locale("fr-FR", {"el-GR"})
    assert sum("fr-FR" in r.message for r in caplog.records) == 1


def test_language_id_spec_parsing():
    assert LanguageId.parse("auto") == (None, LanguageId())
    assert LanguageId.parse("el-GR") == ("el-GR", LanguageId())
    fixed, lid = LanguageId.parse("auto:el-GR, uk-UA", adapter_aware=True)
    assert fixed is None and lid.candidates == ("el-GR", "uk-UA") and lid.adapter_aware
    with pytest.raises(ValueError, match="at least one"):
        LanguageId.parse("auto:")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    base = bundles.tiny_dir(root / "base")
    bundle = bundles.make_bundle(base, root / "lora", "lora", {"rank": 4})
    return Transcriber.load("whisper", str(base), str(bundle), options={"max_new_tokens": 6})


def test_candidates_restrict_identification_and_name_the_locale(service):
    wavs = bundles.clips()
    cands = ("el-GR", "uk-UA", "en-US")
    service.lid = LanguageId(candidates=cands)
    got = service.identify(wavs)
    assert all(g in cands for g in got)
    # The restriction is an argmax over the candidates' language log-probs only.
    from asr_adapt.decoding.decoders import decoder_for
    from asr_adapt.routing import Route

    codes, logp = decoder_for(service.backbone).language_logprobs(service.backbone, wavs, service.base_options,
                                                                  Route.base(len(wavs)))
    keep = [codes.index(c) for c in ("el", "uk", "en")]
    want = [("el-GR", "uk-UA", "en-US")[i] for i in logp[:, keep].argmax(-1).tolist()]
    assert got == want


def test_adapter_aware_identification_picks_the_most_likely_adapted_decode(service):
    from asr_adapt.decoding.decoders import decoder_for
    from asr_adapt.routing import Route

    wavs = bundles.clips()
    cands = ("el-GR", "uk-UA")
    codes, logp = decoder_for(service.backbone).language_logprobs(service.backbone, wavs, service.base_options,
                                                                  Route.base(len(wavs)))
    for weight in (0.0, 1.0, 100.0):
        service.lid = LanguageId(candidates=cands, adapter_aware=True, top_k=2, decode_weight=weight)
        got = service.identify(wavs)
        # By hand: the language prior plus the weighted mean log-prob of each candidate's adapted decode.
        for i, (wav, g) in enumerate(zip(wavs, got)):
            score = {c: float(logp[i, codes.index(c[:2])]) + weight * service.transcribe([wav], [c])[0].hyp.avg_logprob
                     for c in cands}
            assert g == max(score, key=score.get), (weight, i)


def test_adapter_rows_use_the_bundle_window_other_rows_the_base_options(tmp_path):
    """A bundle trained at a 3 s window records it; its rows decode at 3 s, other rows at the base's 10 s."""
    import json

    from asr_adapt.decoding.decoders import transcribe_batch

    base = bundles.tiny_dir(tmp_path / "base")
    bundle = bundles.make_bundle(base, tmp_path / "lora", "lora", {"rank": 4})
    meta_file = bundle / "adapter_config.json"
    meta = json.loads(meta_file.read_text())
    for entry in meta["sets"].values():
        for loc in entry["locales"].values():
            loc.setdefault("provenance", {})["decode"] = {"min_window_s": 3.0}
    meta_file.write_text(json.dumps(meta))
    svc = Transcriber.load("whisper", str(base), str(bundle), options={"max_new_tokens": 6})
    assert svc.options_for("el-GR").min_window_s == 3.0 and svc.options_for(None).min_window_s == 10.0
    wavs = bundles.clips()[:2]
    got = svc.transcribe(wavs, ["el-GR", "de-DE"])
    at3 = transcribe_batch(svc.backbone, wavs[:1], ["el-GR"], svc.options_for("el-GR"), route=["el-GR"])
    at10 = transcribe_batch(svc.backbone, wavs[1:], ["de-DE"], svc.options_for(None), route=[None])
    assert [d.hyp.tokens for d in got] == [at3[0].tokens, at10[0].tokens]
