"""Hand-computed WER/CER cases, jiwer agreement, Kaldi lines, tables, macro vs pooled."""

import jiwer
import pytest

from asr_adapt.scoring import FAST, ScoreConfig, ScoringError, dev_wer, get_normaliser, kaldi_line, score
from asr_adapt.scoring.metrics import Counts, char_text

NOBOOT = ScoreConfig(bootstrap=0)


def one(ref, hyp, lang="en-US", config=NOBOOT):
    rep = score({"u1": ref}, {"u1": hyp}, {"u1": lang}, config)
    return rep, rep.locales[lang]


@pytest.mark.parametrize(
    "ref,hyp,counts",
    [
        ("a b", "a x b y", Counts(ref=2, hits=2, sub=0, dele=0, ins=2)),  # insertions only
        ("a b c d", "a d", Counts(ref=4, hits=2, sub=0, dele=2, ins=0)),  # deletions only
        ("a b c d", "a x c y", Counts(ref=4, hits=2, sub=2, dele=0, ins=0)),  # substitutions only
        ("a b c", "", Counts(ref=3, hits=0, sub=0, dele=3, ins=0)),  # empty hypothesis
    ],
)
def test_hand_computed_word_counts(ref, hyp, counts):
    _, row = one(ref, hyp)
    assert row.words == counts
    assert row.rate == pytest.approx(100.0 * counts.errors / counts.ref)


def test_kaldi_line_exact():
    _, row = one("a b c d e f g h", "a x c d f g h i")  # 1 sub, 1 del, 1 ins over 8
    assert row.kaldi_line() == "%WER 37.50 [ 3 / 8, 1 ins, 1 del, 1 sub ]"
    assert kaldi_line(Counts(3, 1, 1, 1, 0), "CER") == "%CER 66.67 [ 2 / 3, 0 ins, 1 del, 1 sub ]"


def test_combining_marks_are_not_split():
    norm = get_normaliser("multilingual")
    assert norm("नमस्ते दुनिया।").split() == ["नमस्ते", "दुनिया"]  # virama/matras kept, danda removed
    assert norm("สวัสดี ครับ").split() == ["สวัสดี", "ครับ"]  # Thai vowel and tone marks kept
    _, row = one("नमस्ते दुनिया", "नमस्ते दुनीया", lang="hi-IN")
    assert (row.words.sub, row.words.ref) == (1, 2)
    # A decomposed é equals the composed one after NFKC.
    _, row = one("caf\u00e9 ouvert", "cafe\u0301 ouvert", lang="fr-FR")
    assert row.words.errors == 0


def test_rtl_arabic_and_hebrew():
    # Bidi marks and Arabic punctuation are not words; harakat are kept (a real difference).
    _, row = one("مرحبا، بالعالم", "\u200fمرحبا بالعالم\u200f", lang="ar-EG")
    assert row.words.errors == 0 and row.words.ref == 2
    _, row = one("كَتَبَ الولد", "كتب الولد", lang="ar-EG")
    assert (row.words.sub, row.words.ref) == (1, 2)
    _, row = one("שלום עולם", "שלום", lang="he-IL")
    assert (row.words.dele, row.rate) == (1, 50.0)


def test_cjk_cer_is_headline():
    rep, row = one("我爱北京天安门", "我爱北京", lang="zh-CN")
    assert row.metric == "cer"
    assert (row.chars.ref, row.chars.dele) == (7, 3)
    assert row.rate == pytest.approx(300 / 7)
    assert row.words.rate == 100.0  # one "word" substituted: why WER is not the headline
    assert row.kaldi_line().startswith("%CER 42.86 [ 3 / 7, 0 ins, 3 del, 0 sub ]")
    # Spaces are a segmentation artefact in CER locales: ignored.
    _, row = one("今日は晴れ", "今日は 晴れ", lang="ja")
    assert row.rate == 0.0
    # The set is configurable: th as WER when removed from it.
    _, row = one("สวัสดีครับ", "สวัสดีคับ", lang="th-TH", config=ScoreConfig(bootstrap=0, cer_locales=("zh",)))
    assert row.metric == "wer"


def test_totals_equal_jiwer():
    refs = {f"u{i}": t for i, t in enumerate(
        ["the cat sat on the mat", "hello there world", "one two three four", "good morning", "a b c d e"])}
    hyps = {"u0": "the cat sat on a mat today", "u1": "hello world", "u2": "one too three for",
            "u3": "", "u4": "a b x d e f g"}
    rep = score(refs, hyps, {u: "en-US" for u in refs}, NOBOOT)
    norm = get_normaliser("multilingual")
    r = [norm(refs[u]) for u in sorted(refs)]
    h = [norm(hyps[u]) for u in sorted(refs)]
    jw = jiwer.process_words(r, h)
    words = rep.locales["en-US"].words
    assert (words.hits, words.sub, words.dele, words.ins) == (jw.hits, jw.substitutions, jw.deletions, jw.insertions)
    assert words.rate == pytest.approx(100 * jw.wer)
    jc = jiwer.process_characters([char_text(x, False) for x in r], [char_text(x, False) for x in h])
    assert rep.locales["en-US"].chars.rate == pytest.approx(100 * jc.cer)


def test_sclite_table_and_macro_vs_pooled():
    refs = {"a1": "one two three four five six seven eight nine ten", "b1": "x y"}
    hyps = {"a1": "one two three four five six seven eight nine tan", "b1": "p q"}
    rep = score(refs, hyps, {"a1": "el-GR", "b1": "sw-KE"}, NOBOOT)
    assert rep.locales["el-GR"].rate == 10.0 and rep.locales["sw-KE"].rate == 100.0
    assert rep.macro.rate == pytest.approx(55.0)  # mean of 10 and 100
    assert rep.pooled.rate == pytest.approx(25.0)  # 3 errors / 12 words
    lines = rep.sclite_table().splitlines()
    assert lines[0] == ("| locale | Snt | Wrd | Corr | Sub | Del | Ins | Err | S.Err | unit | WER | CER | 95% CI |")
    assert lines[2] == "| el-GR | 1 | 10 | 90.00 | 10.00 | 0.00 | 0.00 | 10.00 | 100.00 | word | 10.00 | 2.08 | - |"  # CER 1 / 48 chars
    assert lines[-2].startswith("| macro avg | 2 | 12 | 45.00 | 55.00 |")
    assert lines[-1].startswith("| pooled | 2 | 12 | 75.00 | 25.00 |")
    md = rep.to_markdown()
    assert "**macro avg**" in md and "**pooled**" in md and "`multilingual`" in md


def test_empty_reference_errors_name_the_utterance():
    with pytest.raises(ScoringError, match="'bad1'"):
        score({"ok": "a b", "bad1": "   "}, {"ok": "a b", "bad1": "x"}, None, NOBOOT)
    with pytest.raises(ScoringError, match=r"'noise7'.*empty after normaliser"):
        score({"noise7": "[noise] !!"}, {"noise7": ""}, None, NOBOOT)


def test_missing_and_extra_hypotheses():
    rep = score({"a": "x y z", "b": "p q"}, {"a": "x y z", "zz": "stray"}, None, NOBOOT)
    assert rep.missing == ["b"] and rep.extra == ["zz"]
    assert rep.locales["und"].words == Counts(ref=5, hits=3, sub=0, dele=2, ins=0)
    assert "without hypothesis" in rep.to_markdown()


def test_fast_path_matches_full_path():
    refs = {"a": "ένα δύο τρία", "b": "我爱你"}
    hyps = {"a": "ένα δυο τρία", "b": "我你"}
    langs = {"a": "el-GR", "b": "zh-CN"}
    fast = dev_wer(refs, hyps, langs)
    full = score(refs, hyps, langs, ScoreConfig(bootstrap=0))
    assert fast == {"el-GR": full.locales["el-GR"].rate, "zh-CN": full.locales["zh-CN"].rate,
                    "macro": full.macro.rate, "pooled": full.pooled.rate}
    assert fast["el-GR"] == pytest.approx(100 / 3) and fast["zh-CN"] == pytest.approx(100 / 3)
    assert score(refs, hyps, langs, FAST).utterances[0].pairs == ()
