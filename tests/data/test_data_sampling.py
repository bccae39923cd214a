"""Duration bucketing and locale-balanced sampling."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from asr_adapt.data.sampling import (
    BucketingConfig,
    DurationBucketingBatchSampler,
    LocaleBalancedSampler,
    locale_probabilities,
)


def durations(n: int = 400, seed: int = 0) -> list[float]:
    r = random.Random(seed)
    return [r.uniform(0.5, 12.0) for _ in range(n)]


def test_bucketing_respects_cap_and_covers_every_index_once():
    durs = durations()
    sampler = DurationBucketingBatchSampler(durs, BucketingConfig(max_seconds=40.0, num_buckets=6, seed=1))
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(durs)))
        assert all(sum(durs[i] for i in b) <= 40.0 for b in batches)
        assert max(len(b) for b in batches) > 3  # short utterances share batches


def test_bucketing_groups_similar_durations():
    durs = durations()
    batches = list(DurationBucketingBatchSampler(durs, BucketingConfig(max_seconds=40.0, num_buckets=6)))
    spread = [max(durs[i] for i in b) - min(durs[i] for i in b) for b in batches if len(b) > 1]
    assert sum(spread) / len(spread) < 11.5 / 3  # random batches would spread over most of 0.5-12 s


def test_bucketing_is_deterministic_per_seed_and_epoch():
    durs = durations()

    def run(seed, epoch):
        s = DurationBucketingBatchSampler(durs, BucketingConfig(max_seconds=30.0, seed=seed))
        s.set_epoch(epoch)
        return list(s)

    assert run(3, 0) == run(3, 0)
    assert run(3, 0) != run(3, 1)
    assert run(3, 0) != run(4, 0)


def test_overlong_utterance_is_yielded_alone():
    batches = list(DurationBucketingBatchSampler([1.0, 50.0, 2.0], BucketingConfig(max_seconds=10.0, num_buckets=1)))
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


def test_bucketing_shards_are_disjoint():
    durs = durations(200)
    cfg = BucketingConfig(max_seconds=30.0, seed=2)
    shards = [[i for b in DurationBucketingBatchSampler(durs, cfg, rank=r, world_size=2) for i in b] for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert len(shards[0]) > 50 and len(shards[1]) > 50


def test_bucketing_validates_inputs():
    with pytest.raises(ValueError, match="no positive duration"):
        DurationBucketingBatchSampler([1.0, 0.0])
    with pytest.raises(ValueError, match="max_seconds"):
        BucketingConfig(max_seconds=0)
    with pytest.raises(ValueError, match="rank"):
        DurationBucketingBatchSampler([1.0], rank=2, world_size=2)


def test_works_as_dataloader_batch_sampler():
    durs = durations(50)
    ds = torch.arange(50)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=DurationBucketingBatchSampler(durs, BucketingConfig(20.0)))
    seen = torch.cat(list(loader))
    assert sorted(seen.tolist()) == list(range(50))


_Z2 = math.sqrt(400) + math.sqrt(80) + math.sqrt(20)  # T=2: weights n^(1/2)


@pytest.mark.parametrize(
    "temperature, expected",
    [
        (1.0, {"en": 0.8, "el": 0.16, "hy": 0.04}),
        (2.0, {"en": 20 / _Z2, "el": math.sqrt(80) / _Z2, "hy": math.sqrt(20) / _Z2}),
        (float("inf"), {"en": 1 / 3, "el": 1 / 3, "hy": 1 / 3}),
    ],
)
def test_locale_probabilities(temperature, expected):
    counts = {"en": 400, "el": 80, "hy": 20, "empty": 0}
    p = locale_probabilities(counts, temperature)
    assert set(p) == {"en", "el", "hy"}
    assert p == pytest.approx(expected)
    assert sum(p.values()) == pytest.approx(1.0)


def test_locale_probabilities_flatten_monotonically_and_reject_bad_input():
    counts = {"head": 10_000, "tail": 10}
    tails = [locale_probabilities(counts, t)["tail"] for t in (1, 2, 5, 100)]
    assert tails == sorted(tails) and tails[-1] < 0.5
    assert locale_probabilities({"a": 10**300, "b": 1}, 0.01)["a"] == pytest.approx(1.0)  # no overflow
    with pytest.raises(ValueError):
        locale_probabilities(counts, 0)
    with pytest.raises(ValueError):
        locale_probabilities({"a": 0}, 1)


def test_balanced_sampler_draws_by_locale_probability():
    langs = ["en-US"] * 900 + ["el-GR"] * 90 + ["hy-AM"] * 10
    s = LocaleBalancedSampler(langs, temperature=float("inf"), num_samples=6000, seed=0)
    drawn = Counter(langs[i] for i in s)
    for loc in ("en-US", "el-GR", "hy-AM"):
        assert drawn[loc] / 6000 == pytest.approx(1 / 3, abs=0.03)
    # A tail locale cycles through all its utterances before repeating any.
    hy = [i for i in s if langs[i] == "hy-AM"]
    assert sorted(hy[:10]) == list(range(990, 1000))


def test_locale_weights_tilt_the_draw_and_reject_typos():
    counts = {"en": 400, "el": 80, "hy": 20}
    base = locale_probabilities(counts, 2.0)
    tilted = locale_probabilities(counts, 2.0, {"hy": 4.0})
    # Only the ratios involving the weighted locale change, by exactly its weight.
    assert tilted["hy"] / tilted["en"] == pytest.approx(4.0 * base["hy"] / base["en"])
    assert tilted["el"] / tilted["en"] == pytest.approx(base["el"] / base["en"])
    assert locale_probabilities(counts, 2.0, {"en": 1.0, "el": 1.0}) == pytest.approx(base)
    for bad in ({"fr": 2.0}, {"en": 0.0}, {"en": -1.0}, {"en": float("inf")}):
        with pytest.raises(ValueError):
            locale_probabilities(counts, 2.0, bad)
    langs = ["a"] * 500 + ["b"] * 500
    s = LocaleBalancedSampler(langs, temperature=1.0, num_samples=8000, seed=0, weights={"b": 3.0})
    assert Counter(langs[i] for i in s)["b"] / 8000 == pytest.approx(0.75, abs=0.02)


def test_balanced_sampler_natural_temperature_and_determinism():
    langs = ["a"] * 300 + ["b"] * 100
    s = LocaleBalancedSampler(langs, temperature=1.0, seed=5)
    assert len(s) == 400
    assert Counter(langs[i] for i in s)["b"] / 400 == pytest.approx(0.25, abs=0.06)
    first = list(s)
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first


def test_balanced_sampler_shards():
    langs = ["a"] * 50 + ["b"] * 7
    full = list(LocaleBalancedSampler(langs, temperature=3.0, num_samples=102, seed=1))
    shards = [list(LocaleBalancedSampler(langs, temperature=3.0, num_samples=101, seed=1, rank=r, world_size=3))
              for r in range(3)]
    assert [len(s) for s in shards] == [34, 34, 34]  # padded to a multiple of world_size
    assert full == [shards[k % 3][k // 3] for k in range(102)]


def test_balanced_draw_composes_with_bucketing():
    langs = ["a"] * 90 + ["b"] * 10
    durs = [2.0 if lang == "a" else 5.0 for lang in langs]
    idx = LocaleBalancedSampler(langs, temperature=float("inf"), seed=0)
    bs = DurationBucketingBatchSampler(durs, BucketingConfig(max_seconds=20.0, num_buckets=2), index_sampler=idx)
    bs.set_epoch(0)
    flat = [i for b in bs for i in b]
    assert len(flat) == 100
    assert all(sum(durs[i] for i in b) <= 20.0 for b in bs)
    assert Counter(langs[i] for i in flat)["b"] > 30  # upsampled from 10
