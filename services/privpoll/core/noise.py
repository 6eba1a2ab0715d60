"""Fake ballots and randomized response: the noise a poll creator chooses."""

from __future__ import annotations

import json
import math
import random
from bisect import bisect, bisect_left
from collections.abc import Sequence
from itertools import accumulate

from privpoll.core import randomness
from privpoll.core.spec import FakeVotes, PollRules


def fake_count(spec: FakeVotes, rng: random.Random | None = None) -> int:
    """Draw K, the number of fake ballots to hide one real ballot among."""
    rng = rng or randomness.system
    if spec.distribution == "fixed":
        assert spec.count is not None
        return spec.count
    if spec.distribution == "uniform":
        assert spec.max is not None
        return rng.randint(spec.min, spec.max)
    assert spec.mean is not None
    return spec.min + _poisson(spec.mean - spec.min, rng)


def _poisson(mean: float, rng: random.Random) -> int:
    """Inverse-transform sampling; means here are small (<= 100)."""
    if mean <= 0:
        return 0
    u = rng.random()
    k, p = 0, math.exp(-mean)
    cumulative = p
    while u > cumulative and p > 0:
        k += 1
        p *= mean / k
        cumulative += p
    return k


def _poisson_table(mean: float) -> list[float]:
    """The cumulative sums ``_poisson`` walks, computed the same way, up to the first term
    that underflows to 0 (where its loop stops too): ``_poisson(mean, rng)`` is
    ``bisect_left(table, u, 0, len(table) - 1)`` for ``u = rng.random()``."""
    k, p = 0, math.exp(-mean)
    cumulative = p
    table = [cumulative]
    while p > 0:
        k += 1
        p *= mean / k
        cumulative += p
        table.append(cumulative)
    return table


# Poisson counts above this quantile are rare enough to pay a second read of the CSPRNG.
_LIKELY = 0.999


def epsilon(p: float, choices: int) -> float | None:
    """The local-DP guarantee of replacing a choice uniformly with probability p."""
    if p <= 0:
        return None
    return math.log(1 + choices * (1 - p) / p)


class NoiseDraws:
    """The draws that disguise the votes of one poll (fake ballots, randomized response),
    precomputed once per poll; ``privpoll.core.spec.Noise`` is what the creator asked for."""

    def __init__(self, spec: PollRules) -> None:
        self.choices = list(spec.choices)
        self.weights = spec.fake_weights()
        self.fake_votes = spec.noise.fake_votes
        self.p = spec.replacement_probability()
        # For the draws from words of the CSPRNG (``*_from``, used by ``envelope.seal_bytes``):
        # the same arithmetic as ``fake_count``, ``_poisson`` and ``random.Random.choices``.
        self._cum_weights = list(accumulate(self.weights))
        self._total = self._cum_weights[-1] + 0.0
        spec_k = self.fake_votes
        self._min = spec_k.lowest
        self._span = 0  # K is min + below(span) for ``uniform``
        self._poisson: list[float] | None = None
        self.likely_count = spec_k.lowest  # K is rarely above: what to read the CSPRNG for
        if spec_k.distribution == "uniform":
            assert spec_k.max is not None
            self._span = spec_k.max - spec_k.min + 1
            self.likely_count = spec_k.max
        elif spec_k.distribution == "poisson" and (spec_k.mean or 0) - spec_k.min > 0:
            assert spec_k.mean is not None
            table = self._poisson = _poisson_table(spec_k.mean - spec_k.min)
            self.likely_count += bisect_left(table, _LIKELY, 0, len(table) - 1)
        # Each choice as a JSON string (``json.dumps(choice, ensure_ascii=False)``).
        self.json_choices = {c: json.dumps(c, ensure_ascii=False) for c in self.choices}

    def reported(self, choice: str, rng: random.Random | None = None) -> str:
        """The choice that goes into the real ballot, after randomized response."""
        rng = rng or randomness.system
        if self.p > 0 and rng.random() < self.p:
            return rng.choice(self.choices)
        return choice

    def fakes(self, rng: random.Random | None = None) -> list[str]:
        rng = rng or randomness.system
        k = fake_count(self.fake_votes, rng)
        return rng.choices(self.choices, weights=self.weights, k=k)

    # The same draws from uniform 64-bit words (from the CSPRNG, many of them read at once),
    # each distributed exactly as its twin above draws it from a ``random.Random``.

    def count_from(self, word: int) -> int:
        """``fake_count(self.fake_votes)``: K from one word."""
        table = self._poisson
        if table is not None:
            return self._min + bisect_left(table, randomness.unit(word), 0, len(table) - 1)
        if self._span:
            return self._min + randomness.below(word, self._span)
        return self._min  # fixed, or a Poisson mean of nothing above min

    def reported_from(self, choice: str, coin: int, pick: int) -> str:
        """``reported(choice)``: randomized response from two words."""
        if self.p > 0 and randomness.unit(coin) < self.p:
            return self.choices[randomness.below(pick, len(self.choices))]
        return choice

    def fakes_from(self, words: Sequence[int]) -> list[str]:
        """``fakes()`` given K = ``len(words)``: one fake choice from each word."""
        choices, cum_weights, total = self.choices, self._cum_weights, self._total
        hi = len(choices) - 1
        unit = randomness.unit
        return [choices[bisect(cum_weights, unit(w) * total, 0, hi)] for w in words]
