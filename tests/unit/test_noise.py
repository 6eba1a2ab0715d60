from __future__ import annotations

import math
import random
import statistics

import pytest

from privpoll.core.noise import NoiseDraws, epsilon, fake_count
from privpoll.core.spec import FakeVotes, PollRules


@pytest.mark.parametrize(
    ("spec", "mean"),
    [
        (FakeVotes(distribution="fixed", count=3), 3.0),
        (FakeVotes(distribution="poisson", mean=2.5, min=1), 2.5),
        (FakeVotes(distribution="uniform", min=1, max=5), 3.0),
    ],
)
def test_fake_count_never_below_min_and_has_the_promised_mean(spec: FakeVotes, mean: float) -> None:
    rng = random.Random(1)
    draws = [fake_count(spec, rng) for _ in range(20000)]
    assert min(draws) >= spec.lowest >= 1
    assert math.isclose(statistics.fmean(draws), mean, rel_tol=0.03)
    assert spec.expected == mean


def test_epsilon_matches_replacement_probability() -> None:
    assert epsilon(0, 3) is None
    assert math.isclose(epsilon(3 / (math.e**2 - 1 + 3), 3) or 0, 2.0)


def test_draws_given_a_generator_come_from_it_alone() -> None:
    """Simulations (the estimator's tests, the privacy report) pass a seeded generator: the
    same seed must give the same fakes and the same randomized response, drawn from nothing
    else."""
    rules = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["a", "b", "c"],
            "noise": {
                "fakeVotes": {"distribution": "poisson", "mean": 4, "min": 1},
                "randomizedResponse": {"probability": 0.5},
            },
        }
    )
    noise = NoiseDraws(rules)
    first, again = random.Random(29), random.Random(29)
    draws = [(noise.reported("a", first), noise.fakes(first)) for _ in range(50)]
    assert draws == [(noise.reported("a", again), noise.fakes(again)) for _ in range(50)]
    assert len({len(fakes) for _, fakes in draws}) > 1
