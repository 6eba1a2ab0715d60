"""The 95% intervals cover the true count at least 95% of the time, down to a single voter.

Small polls are where a normal approximation fails first: few ballots, counts near 0 or n,
an estimate clipped at an end. Each case simulates many polls of 1 to 10 voters and counts
how often every choice's interval holds its true count; the test fails when that share is
below 95% by more than three standard errors of the simulation.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from privpoll.core.noise import NoiseDraws
from privpoll.core.results import estimate
from privpoll.core.spec import PollRules

CHOICES = ["pizza", "sushi", "tacos"]
POLLS = 240  # per number of voters and split: about 3 s for the whole file


def rules(noise: dict[str, Any] | None) -> PollRules:
    body: dict[str, Any] = {"title": "t", "choices": CHOICES}
    if noise is not None:
        body["noise"] = noise
    return PollRules.model_validate(body)


CASES = {
    "recommended": rules(None),
    "one-fake": rules({"fakeVotes": {"distribution": "fixed", "count": 1}}),
    "uniform-weighted": rules(
        {
            "fakeVotes": {"distribution": "uniform", "min": 1, "max": 4},
            "choiceWeights": {"pizza": 3, "sushi": 1, "tacos": 1},
        }
    ),
    "randomized-only": rules(
        {
            "fakeVotes": {"distribution": "fixed", "count": 0, "min": 0},
            "randomizedResponse": {"epsilon": 1.0},
        }
    ),
}


def splits(n: int) -> list[list[str]]:
    """Everyone for one choice, and an even split: the ends and the middle of the range."""
    return [["pizza"] * n, [CHOICES[i % 3] for i in range(n)]]


@pytest.mark.parametrize("case", CASES)
def test_intervals_cover_small_polls(case: str) -> None:
    spec = CASES[case]
    noise = NoiseDraws(spec)
    weights, p = spec.fake_weights(), spec.replacement_probability()
    rng = random.Random(f"coverage {case}")
    for n in range(1, 11):
        covered = trials = 0
        for votes in splits(n):
            truth = Counter(votes)
            for _ in range(POLLS):
                stored: Counter[str] = Counter()
                for choice in votes:
                    stored[noise.reported(choice, rng)] += 1
                    stored.update(noise.fakes(rng))
                for row in estimate(stored, CHOICES, weights, n, p):
                    lo, hi = row.ci95
                    assert lo < hi, f"zero-width interval {row}"
                    assert lo <= row.estimate <= hi, f"estimate outside its interval {row}"
                    covered += lo <= truth[row.choice] <= hi
                    trials += 1
        coverage = covered / trials
        error = math.sqrt(0.95 * 0.05 / trials)
        assert coverage >= 0.95 - 3 * error, f"{n} voters: covered {coverage:.1%}"
