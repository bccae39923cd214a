"""Batching: duration-bucketed batches under a seconds cap, and locale-balanced sampling.

* :class:`DurationBucketingBatchSampler` wraps lhotse's ``DynamicBucketingSampler``. The
  utterances' known durations become a ``CutSet`` of audio-less cuts (no file is opened),
  lhotse groups them into duration buckets and fills batches up to ``max_seconds`` of
  audio, and the sampler yields lists of utterance indices, so it plugs into
  ``torch.utils.data.DataLoader(dataset, batch_sampler=...)`` for any indexable dataset.
* :func:`locale_probabilities` / :class:`LocaleBalancedSampler` draw utterances so that
  locale ``l`` is picked with probability ``p_l ∝ n_l^(1/T)``: ``T = 1`` keeps the natural
  distribution, larger ``T`` flattens it towards uniform (``T = inf``), which is how tail
  locales get seen often enough without discarding head data.

The two compose: pass a ``LocaleBalancedSampler`` as ``index_sampler`` and each epoch's
balanced draw is bucketed by duration. Both are deterministic given ``seed`` and the
epoch set with ``set_epoch`` (call it every epoch, as with ``DistributedSampler``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class BucketingConfig:
    """How :class:`DurationBucketingBatchSampler` forms batches."""

    max_seconds: float = field(default=120.0, metadata={"help": "cap on the total audio seconds in one batch"})
    num_buckets: int = field(default=10, metadata={"help": "duration buckets; utterances of similar length batch together"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle within buckets and the order of batches"})
    drop_last: bool = field(default=False, metadata={"help": "drop a final partial batch of each bucket"})
    seed: int = field(default=0, metadata={"help": "base seed; the epoch is added (see set_epoch)"})

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {self.num_buckets}")


class DurationBucketingBatchSampler(Sampler[list[int]]):
    """Yields lists of indices into ``durations`` whose total duration is <= ``max_seconds``.

    Every index appears exactly once per epoch (with ``drop_last=False`` and no
    ``index_sampler``). An utterance longer than ``max_seconds`` is still yielded, alone
    in its batch, rather than silently lost.

    Args:
        durations: (N,) seconds per utterance, e.g. ``[u.duration for u in utts]``.
        config: batching settings.
        rank, world_size: distributed data parallel: each rank gets a disjoint share of
            the batches. Leave at 0/1 when ``index_sampler`` already shards.
        index_sampler: optional ``Sampler[int]`` (e.g. :class:`LocaleBalancedSampler`)
            whose draw, repeats included, is what gets bucketed each epoch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        config: BucketingConfig = BucketingConfig(),
        *,
        rank: int = 0,
        world_size: int = 1,
        index_sampler: Sampler[int] | None = None,
    ) -> None:
        self.durations = [float(d) for d in durations]
        bad = [i for i, d in enumerate(self.durations) if not (math.isfinite(d) and d > 0)]
        if bad:
            raise ValueError(f"{len(bad)} utterances have no positive duration (first index {bad[0]}); "
                             "bucketing needs durations (write utt2dur or manifest durations)")
        _check_rank(rank, world_size)
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.index_sampler = index_sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.index_sampler, "set_epoch"):
            self.index_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        from lhotse import CutSet, MonoCut
        from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

        draw = list(self.index_sampler) if self.index_sampler is not None else range(len(self.durations))
        if not draw:
            return
        # Cut ids are positions in the draw, so a locale-balanced draw may repeat an utterance.
        cuts = CutSet.from_cuts(
            MonoCut(id=str(k), start=0.0, duration=self.durations[i], channel=0) for k, i in enumerate(draw)
        )
        c = self.config
        with warnings.catch_warnings():
            # lhotse suggests lazy CutSets for memory; ours are a few floats per utterance.
            # Bucket-edge estimation on many equal durations averages empty slices (harmless).
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            common = dict(max_duration=c.max_seconds, shuffle=c.shuffle, drop_last=c.drop_last, seed=c.seed,
                          world_size=self.world_size, rank=self.rank)
            buckets = min(c.num_buckets, len(draw))
            # lhotse's bucketing needs >= 2 buckets; one bucket is plain dynamic batching.
            if buckets >= 2:
                sampler = DynamicBucketingSampler(cuts, num_buckets=buckets, **common)
            else:
                sampler = DynamicCutSampler(cuts, **common)
            sampler.set_epoch(self.epoch)
            for batch in sampler:
                yield from _split_to_cap([draw[int(cut.id)] for cut in batch], self.durations, c.max_seconds)


def _split_to_cap(batch: list[int], durations: Sequence[float], cap: float) -> Iterator[list[int]]:
    """Split a batch greedily so each part stays within ``cap`` seconds.

    lhotse may let the cut that crosses ``max_duration`` (e.g. one longer than the cap)
    into a batch; the cap is a memory limit, so it is enforced here. An utterance longer
    than ``cap`` becomes a batch of its own.
    """
    part: list[int] = []
    total = 0.0
    for i in batch:
        if part and total + durations[i] > cap:
            yield part
            part, total = [], 0.0
        part.append(i)
        total += durations[i]
    if part:
        yield part


def locale_probabilities(
    counts: Mapping[str, int], temperature: float = 1.0, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``p_l ∝ w_l n_l^(1/T)`` over locales with ``n_l > 0`` (``w_l`` 1 unless given).

    ``weights`` tilt the draw towards locales that need more updates than their share (e.g.
    the languages with the least regular spelling in a multilingual character model);
    naming a locale the data lacks is an error, not a silent no-op.

    >>> p = locale_probabilities({"en-US": 900, "el-GR": 100}, 1.0); round(p["el-GR"], 6)
    0.1
    >>> locale_probabilities({"en-US": 900, "el-GR": 100}, float("inf"))
    {'en-US': 0.5, 'el-GR': 0.5}
    >>> p = locale_probabilities({"en-US": 100, "el-GR": 100}, 1.0, {"en-US": 3.0}); round(p["en-US"], 6)
    0.75
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (1 natural, inf uniform), got {temperature}")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(counts))
    if unknown:
        raise ValueError(f"locale weights name locales the training data lacks: {unknown} (have {sorted(counts)})")
    bad = {k: w for k, w in weights.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ValueError(f"locale weights must be finite and > 0, got {bad}")
    live = {k: n for k, n in counts.items() if n > 0}
    if not live:
        raise ValueError("no locale has any utterance")
    # Work in log space: n^(1/T) for large n and small T overflows floats.
    logw = {k: math.log(n) / temperature + math.log(weights.get(k, 1.0)) for k, n in live.items()}
    top = max(logw.values())
    w = {k: math.exp(v - top) for k, v in logw.items()}
    z = sum(w.values())
    return {k: v / z for k, v in w.items()}


class LocaleBalancedSampler(Sampler[int]):
    """Draws utterance indices with locale probabilities ``p_l ∝ n_l^(1/T)``.

    A locale is drawn by its probability, then its next utterance from a per-locale
    shuffled order that is reshuffled each time it is used up, so a tail locale's
    utterances recur evenly instead of at random. All ranks compute the same global draw
    and take every ``world_size``-th element from ``rank``, so shards are disjoint and
    equally long.

    Args:
        langs: (N,) locale per utterance (``None`` counts as its own locale).
        temperature: ``T``; 1 natural, ``float("inf")`` uniform over locales.
        weights: per-locale multipliers ``w_l`` of the draw (see :func:`locale_probabilities`).
        num_samples: draws per epoch over all ranks; default ``N``.
        seed: base seed; combined with the epoch from :meth:`set_epoch`.
    """

    def __init__(
        self,
        langs: Sequence[str | None],
        temperature: float = 1.0,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        _check_rank(rank, world_size)
        self.groups: dict[str | None, np.ndarray] = {}
        for i, lang in enumerate(langs):
            self.groups.setdefault(lang, []).append(i)  # type: ignore[union-attr]
        self.groups = {k: np.asarray(v) for k, v in self.groups.items()}
        order = sorted(self.groups, key=lambda k: (k is None, k or ""))
        self.locales = order
        probs = locale_probabilities({str(k): len(self.groups[k]) for k in order}, temperature, weights)
        self.probs = np.array([probs[str(k)] for k in order])
        self.temperature = temperature
        total = len(langs) if num_samples is None else num_samples
        self.total = int(math.ceil(total / world_size) * world_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def probabilities(self) -> dict[str | None, float]:
        return dict(zip(self.locales, self.probs.tolist()))

    def _global_draw(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        picks = rng.choice(len(self.locales), size=self.total, p=self.probs)
        out = np.empty(self.total, dtype=np.int64)
        for li, loc in enumerate(self.locales):
            where = np.flatnonzero(picks == li)
            pool = self.groups[loc]
            passes = -(-len(where) // len(pool)) if len(where) else 0
            seq = np.concatenate([rng.permutation(pool) for _ in range(passes)]) if passes else pool[:0]
            out[where] = seq[: len(where)]
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._global_draw()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.total // self.world_size


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
