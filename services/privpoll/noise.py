"""Fake ballots and randomized response: the noise a poll creator chooses."""

from __future__ import annotations

import math
import random

from privpoll import randomness
from privpoll.spec import FakeVotes, PollRules


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


def epsilon(p: float, choices: int) -> float | None:
    """The local-DP guarantee of replacing a choice uniformly with probability p."""
    if p <= 0:
        return None
    return math.log(1 + choices * (1 - p) / p)


class Noise:
    """Everything needed to disguise votes of one poll, precomputed once per poll."""

    def __init__(self, spec: PollRules) -> None:
        self.choices = list(spec.choices)
        self.weights = spec.fake_weights()
        self.fake_votes = spec.noise.fake_votes
        self.p = spec.replacement_probability()

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
