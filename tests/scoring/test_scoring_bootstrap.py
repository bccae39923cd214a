"""Bootstrap CIs, paired comparison against a baseline."""

import numpy as np
import pytest

from asr_adapt.scoring import ScoreConfig, score
from asr_adapt.scoring.bootstrap import locale_rng, percentile_ci, prob_improvement, rates, resample_sums

REFS = {f"u{i}": "one two three four five" for i in range(20)}
HYPS = {f"u{i}": ("one two three four five" if i % 3 else "one too three for") for i in range(20)}
LANGS = {u: ("el-GR" if i < 10 else "sw-KE") for i, u in enumerate(REFS)}


def test_bootstrap_deterministic_with_seed():
    a = score(REFS, HYPS, LANGS, ScoreConfig(bootstrap=300, seed=7))
    b = score(REFS, HYPS, LANGS, ScoreConfig(bootstrap=300, seed=7))
    c = score(REFS, HYPS, LANGS, ScoreConfig(bootstrap=300, seed=8))
    assert [r.ci for r in a.rows()] == [r.ci for r in b.rows()]
    assert [r.ci for r in a.rows()] != [r.ci for r in c.rows()]
    for r in a.rows():
        assert r.ci.lo <= r.rate <= r.ci.hi and r.ci.lo < r.ci.hi


def test_locale_ci_independent_of_other_locales():
    both = score(REFS, HYPS, LANGS, ScoreConfig(bootstrap=200, seed=1))
    el = [u for u in REFS if LANGS[u] == "el-GR"]
    alone = score({u: REFS[u] for u in el}, {u: HYPS[u] for u in el}, LANGS, ScoreConfig(bootstrap=200, seed=1))
    assert both.locales["el-GR"].ci == alone.locales["el-GR"].ci


def test_resample_sums_hand_check():
    # All utterances identical: every resample has the same rate.
    res = resample_sums([np.full(5, 2.0)], np.full(5, 4.0), 50, locale_rng(0, "x"))
    assert np.allclose(rates(res.errors[0], res.ref), 50.0)
    assert percentile_ci(np.arange(101, dtype=float), 0.9) == pytest.approx((5.0, 95.0))
    assert prob_improvement(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 5.0])) == 0.5


def test_werr_delta_and_probability_of_improvement():
    refs = {f"u{i}": "a b c d e" for i in range(10)}
    base = {f"u{i}": "a x y d e" for i in range(10)}  # 2 subs / utt: 40 %
    new = {f"u{i}": "a b y d e" for i in range(10)}  # 1 sub / utt: 20 %, better on every utterance
    rep = score(refs, new, None, ScoreConfig(bootstrap=200), baseline=base, baseline_name="zero-shot")
    c = rep.locales["und"].comparison
    assert (c.baseline, c.system) == (40.0, 20.0)
    assert c.delta == -20.0 and c.werr == 50.0
    assert c.p_improve == 1.0
    worse = score(refs, base, None, ScoreConfig(bootstrap=200), baseline=new)
    assert worse.pooled.comparison.p_improve == 0.0 and worse.pooled.comparison.werr == -100.0
    assert "zero-shot" in rep.to_markdown() and "| und | 40.00 | 20.00 | -20.00 | 50.00 | 1.000 |" in rep.to_markdown()
    # Without bootstrap the comparison is still there, without a probability.
    plain = score(refs, new, None, ScoreConfig(bootstrap=0), baseline=base)
    assert plain.macro.comparison.werr == 50.0 and plain.macro.comparison.p_improve is None
