"""Token n-gram LMs and their shallow fusion into transducer beam search."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_adapt.cli.main import main
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.decoding.token_lm import END, TokenNgramLM, lm_path, load_locale_lms
from asr_adapt.decoding.transducer_search import TransducerDecodingOptions, beam_search, modified_beam_search
from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.models.transducer.tokenizer import CharTokenizer
from asr_adapt.routing import Route

SEQS = [[2, 3, 4], [2, 3], [4, 4, 2, 3], [5]]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_gives_a_distribution(order):
    lm = TokenNgramLM.train(SEQS, order, vocab_size=7)
    for history in [[], [2], [2, 3], [4, 4, 2], [6, 6, 6], [1]]:  # seen, unseen, never-counted tokens
        p = np.exp(lm.logprobs(history))
        assert p.shape == (7,) and np.all(p > 0)
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-12)


def test_witten_bell_by_hand():
    """Bigram over V=7 from SEQS: 10 tokens + 4 </s>, 5 distinct (2, 3, 4, 5, </s>)."""
    lm = TokenNgramLM.train(SEQS, 2, vocab_size=7)
    uni = lambda c: (c + 5 / 7) / (14 + 5)  # noqa: E731  (count c, 5 types, uniform 1/7 below)
    p = lambda h, w: float(np.exp(lm.logprobs(h)[w]))  # noqa: E731
    # after <s>: 2 twice, 4 once, 5 once (4 times, 3 types); token 2 occurs 3 times in all
    assert math.isclose(p([], 2), (2 + 3 * uni(3)) / (4 + 3))
    # after 2: always 3 (3 times, 1 type)
    assert math.isclose(p([2], 3), (3 + 1 * uni(3)) / (3 + 1))
    assert math.isclose(p([6], END), uni(4))  # a context never seen: the unigram
    assert math.isclose(lm.score([2, 3]), math.log(p([], 2) * p([2], 3) * p([3], END)))


def test_witten_bell_trigram_backs_off_to_the_newest_token():
    """Trigram: (2, 3) is followed by 4 once and </s> twice; so is (3,). A back-off to the
    oldest token (2,) instead of the newest (3,) would give another number."""
    lm = TokenNgramLM.train(SEQS, 3, vocab_size=7)
    uni4 = (3 + 5 / 7) / (14 + 5)  # token 4 occurs 3 times
    p_3 = (1 + 2 * uni4) / (3 + 2)  # after (3,): 4 once, </s> twice
    assert math.isclose(float(np.exp(lm.logprobs([2, 3])[4])), (1 + 2 * p_3) / (3 + 2))


def test_save_load_round_trips_exactly(tmp_path):
    lm = TokenNgramLM.train(SEQS, 3, vocab_size=7, symbols=list("0123456"), locale="xx-XX")
    lm.save(tmp_path / "xx-XX.json")
    back = load_locale_lms(tmp_path, ["xx-XX", "yy-YY", None], list("0123456"))
    assert back[1] is None and back[2] is None
    for h in [[], [2], [2, 3], [6, 6]]:
        assert np.array_equal(lm.logprobs(h), back[0].logprobs(h))
    with pytest.raises(ValueError, match="another tokenizer"):
        load_locale_lms(tmp_path, ["xx-XX"], list("abcdefg"))  # same size, other tokens
    with pytest.raises(ValueError, match="7 tokens against 8"):
        load_locale_lms(tmp_path, ["xx-XX"], list("01234567"))
    with pytest.raises(FileNotFoundError, match="no LM directory"):
        load_locale_lms(tmp_path / "nowhere", ["xx-XX"], list("0123456"))


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="token ids"):
        TokenNgramLM.train([[0, 2]], 2, vocab_size=7)
    with pytest.raises(ValueError, match="no sentences"):
        TokenNgramLM.train([], 2, vocab_size=7)


class _Tie:
    """A stub transducer that can barely tell token 1 from token 2 at the first frame (it
    prefers 1 by 0.2 nats); after either token, blank. The LM must decide."""

    class _Pred:
        context_size, blank_id = 1, 0

        def __call__(self, ctx, need_pad=False):
            return torch.nn.functional.one_hot(ctx, 4).float()  # (N, 1, 4)

    class _Joiner:
        table = torch.tensor([[-3.0, 0.0, -0.2, -9.0],  # start: 1, or nearly as likely 2
                              [0.0, -9.0, -9.0, -9.0],  # after 1: blank
                              [0.0, -9.0, -9.0, -9.0],  # after 2: blank
                              [0.0, -9.0, -9.0, -9.0]])

        def project_decoder(self, x):
            return x

        def __call__(self, enc, dec):
            return dec @ self.table

    def __init__(self) -> None:
        self.predictor, self.joiner = self._Pred(), self._Joiner()
        self.config = type("C", (), {"frame_s": 0.08})()


@pytest.mark.parametrize("search", [beam_search, modified_beam_search])
def test_the_lm_decides_what_the_audio_cannot(search):
    model, enc_p, lens = _Tie(), torch.zeros(1, 2, 4), torch.tensor([2])
    lm = TokenNgramLM.train([[2]] * 5 + [[3]], 2, vocab_size=4)
    plain = search(model, enc_p, lens, TransducerDecodingOptions(method="beam", beam_size=4), Route.base(1))[0]
    assert plain.tokens == [1] and plain.lm_score == 0.0  # the audio alone says 1
    opts = TransducerDecodingOptions(method="beam", beam_size=4, lm_weight=0.5, lm_bonus=0.7)
    fused = search(model, enc_p, lens, opts, Route.base(1), lms=[lm])[0]
    assert fused.tokens == [2]
    # exactly the weighted sentence log-prob (end included) plus one bonus per token, once each
    assert math.isclose(fused.lm_score, 0.5 * lm.score([2]) + 0.7 * 1, rel_tol=1e-9)
    # the reported log-prob is the acoustic one alone (a probability's log, even with the bonus),
    # below the audio's own favourite
    assert fused.logprob < plain.logprob <= 0.0
    off = search(model, enc_p, lens, TransducerDecodingOptions(method="beam", beam_size=4, lm_weight=0.0,
                                                                lm_bonus=0.0), Route.base(1), lms=[lm])[0]
    assert off.tokens == plain.tokens and math.isclose(off.logprob, plain.logprob) and off.lm_score == 0.0


def test_greedy_with_an_lm_is_refused():
    with pytest.raises(ValueError, match="beam search"):
        TransducerDecodingOptions(lm="some/dir")
    with pytest.raises(ValueError, match="lm_weight"):
        TransducerDecodingOptions(method="beam", lm_weight=-1.0)
    with pytest.raises(ValueError, match="not a directory"):  # at once, not after the model has loaded
        TransducerDecodingOptions(method="beam", lm="/no/such/lm/dir")


TEXTS = ["abc de", "fgh ij"]
SR = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS)).eval()
    with torch.no_grad():
        model.joiner.out.bias[0] -= 3.0  # emit tokens on noise
    d = tmp_path_factory.mktemp("tiny_transducer")
    model.save_pretrained(d)
    return d


def _data_dir(root, texts, locale):
    root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for i, t in enumerate(texts):
        utt = f"{locale}-u{i}"
        wav = root / f"{utt}.wav"
        sf.write(wav, (0.3 * np.random.default_rng(i).standard_normal(SR)).astype(np.float32), SR)
        rows[utt] = (str(wav), t)
    (root / "wav.scp").write_text("".join(f"{u} {w}\n" for u, (w, _) in rows.items()))
    (root / "text").write_text("".join(f"{u} {t}\n" for u, (_, t) in rows.items()))
    (root / "utt2lang").write_text("".join(f"{u} {locale}\n" for u in rows))
    return root


def test_cli_counts_per_locale_and_decode_fuses_only_rows_with_an_lm(tiny_dir, tmp_path):
    a = _data_dir(tmp_path / "a", ["abc abc", "abc de"], "xx-XX")
    assert main(["lm", "train", str(a), "--model", str(tiny_dir), "--order", "3", "-o", str(tmp_path / "lm")]) == 0
    lm_file = lm_path(tmp_path / "lm", "xx-XX")
    assert json.loads(lm_file.read_text())["order"] == 3
    model = TransducerBackbone.from_pretrained(tiny_dir).eval()
    wavs = [(0.3 * np.random.default_rng(s).standard_normal(SR)).astype(np.float32) for s in (1, 2)]
    langs = ["xx-XX", "zz-ZZ"]  # zz-ZZ has no LM: decoded as without one
    plain = transcribe_batch(model, wavs, langs, decoding_options(model, method="beam", beam_size=4), route=None)
    strong = decoding_options(model, method="beam", beam_size=4, lm=str(tmp_path / "lm"), lm_weight=3.0)
    fused = transcribe_batch(model, wavs, langs, strong, route=None)
    assert fused[1].tokens == plain[1].tokens
    lm = load_locale_lms(tmp_path / "lm", ["xx-XX"], model.tokenizer.pieces())[0]
    assert lm.score(fused[0].tokens) > lm.score(plain[0].tokens)  # the LM pulled row 0 its way
    assert main(["decode", str(a), "-o", str(tmp_path / "dec"), "--backbone", "transducer", "--model", str(tiny_dir),
                 "--beam-size", "4", "--lm", str(tmp_path / "lm"), "--lm-weight", "0.5", "--no-progress"]) == 0
    with pytest.raises(SystemExit, match="beam search"):  # greedy + LM: refused, saying what to do
        main(["decode", str(a), "-o", str(tmp_path / "dec2"), "--backbone", "transducer", "--model", str(tiny_dir),
              "--lm", str(tmp_path / "lm"), "--no-progress"])


def test_cli_takes_the_shipped_model_by_name_and_names_a_missing_one(tmp_path, capsys):
    a = _data_dir(tmp_path / "a", ["bonjour le monde"], "fr-FR")
    assert main(["lm", "train", str(a), "--model", "transducer-synth-compact", "-o", str(tmp_path / "lm")]) == 0
    assert lm_path(tmp_path / "lm", "fr-FR").is_file()
    assert main(["lm", "train", str(a), "--model", str(tmp_path / "nowhere"), "-o", str(tmp_path / "lm2")]) == 1
    assert "no such model directory" in capsys.readouterr().err
