"""Normaliser registry and behaviour."""

import pytest

from asr_adapt.scoring import NORMALISERS, ScoreConfig, get_normaliser
from asr_adapt.scoring.normalise import _basic_english


def test_registry_names_and_unknown():
    assert {"multilingual", "whisper-english", "none"} <= set(NORMALISERS.names())
    with pytest.raises(KeyError, match="known: "):
        get_normaliser("klingon")
    with pytest.raises(ValueError, match="unknown normaliser"):
        ScoreConfig(normaliser="klingon")


def test_multilingual():
    n = get_normaliser("multilingual")
    assert n("Hello,  World! [noise] <unk> don't") == "hello world dont"
    assert n("Ｆｕｌｌ－ｗｉｄｔｈ €5 😀 ok") == "full width 5 ok"  # NFKC; symbols removed
    assert n("ΚΑΛΗΜΈΡΑ κόσμε;") == "καλημέρα κόσμε"


def test_none_only_collapses_whitespace():
    assert get_normaliser("none")("  Hello,   World ") == "Hello, World"


def test_whisper_english():
    n = get_normaliser("whisper-english")
    assert n.description  # says which implementation ran
    assert n("I'm sure they won't [noise] like the colour.") == "i am sure they will not like the color"
    # The built-in essentials agree on the common cases.
    assert _basic_english("I'm sure they won't [noise] like the colour.", {"colour": "color"}) == (
        "i am sure they will not like the color")
    assert _basic_english("Mr. Smith paid 1,000 dollars (laughs)", {}) == "mister smith paid 1000 dollars"
