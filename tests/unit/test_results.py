"""The estimator is unbiased and its 95% interval covers the truth about 95% of the time."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from typing import Any

import pytest

from privpoll.core.noise import NoiseDraws
from privpoll.core.results import estimate
from privpoll.core.spec import PollRules

CHOICES = ["pizza", "sushi", "tacos"]
TRUTH = {"pizza": 75, "sushi": 45, "tacos": 30}
POLLS = 2000


def rules(fake_votes: dict[str, Any], **noise: Any) -> PollRules:
    return PollRules.model_validate(
        {"title": "t", "choices": CHOICES, "noise": {"fakeVotes": fake_votes, **noise}}
    )


def simulate(spec: PollRules, rng: random.Random) -> tuple[Counter[str], int]:
    """One poll: every voter's real ballot (after randomized response) plus K fakes."""
    noise = NoiseDraws(spec)
    stored: Counter[str] = Counter()
    for choice, count in TRUTH.items():
        for _ in range(count):
            stored[noise.reported(choice, rng)] += 1
            stored.update(noise.fakes(rng))
    return stored, sum(TRUTH.values())


@pytest.mark.parametrize(
    "spec",
    [
        rules({"distribution": "fixed", "count": 2}),
        rules({"distribution": "poisson", "mean": 2, "min": 1}),
        rules({"distribution": "uniform", "min": 1, "max": 4}),
        rules(
            {"distribution": "poisson", "mean": 2, "min": 1},
            choiceWeights={"pizza": 3, "sushi": 1, "tacos": 1},
        ),
        rules({"distribution": "fixed", "count": 1}, randomizedResponse={"epsilon": 2.0}),
    ],
    ids=["fixed", "poisson", "uniform", "weighted", "randomized-response"],
)
def test_unbiased_with_honest_interval(spec: PollRules) -> None:
    rng = random.Random(20261124)
    covered = 0
    estimates: dict[str, list[float]] = {c: [] for c in CHOICES}
    for _ in range(POLLS):
        stored, votes = simulate(spec, rng)
        found = estimate(
            stored, CHOICES, spec.fake_weights(), votes, spec.replacement_probability()
        )
        for row in found:
            lo, hi = row.ci95
            covered += lo <= TRUTH[row.choice] <= hi
            estimates[row.choice].append(row.estimate)
    coverage = covered / (POLLS * len(CHOICES))
    assert 0.93 <= coverage <= 0.97, f"95% interval covered the truth {coverage:.1%} of the time"
    for choice, values in estimates.items():
        mean = statistics.fmean(values)
        standard_error = statistics.stdev(values) / len(values) ** 0.5
        assert abs(mean - TRUTH[choice]) < 4 * standard_error, (choice, mean)


def test_no_votes_gives_zeros() -> None:
    found = estimate({}, CHOICES, [1 / 3] * 3, 0)
    assert [r.estimate for r in found] == [0, 0, 0]
    assert all(r.ci95 == (0, 0) for r in found)


def test_interval_stays_within_possible_counts() -> None:
    found = estimate({"pizza": 10, "sushi": 0, "tacos": 0}, CHOICES, [1 / 3] * 3, 5)
    for row in found:
        assert 0 <= row.ci95[0] <= row.ci95[1] <= 5
