"""The ± error the creation form previews matches what the estimator later reports."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import pytest

from privpoll.core.noise import NoiseDraws
from privpoll.core.results import estimate, expected_margin
from privpoll.core.spec import PollRules

CHOICES = ["pizza", "sushi", "tacos"]


def rules(fake_votes: dict[str, object], epsilon: float | None = None) -> PollRules:
    noise: dict[str, object] = {"fakeVotes": fake_votes}
    if epsilon is not None:
        noise["randomizedResponse"] = {"epsilon": epsilon}
    return PollRules.model_validate({"title": "t", "choices": CHOICES, "noise": noise})


@pytest.mark.parametrize(("voters", "fake_mean", "p"), [(300, 2.0, 0.0), (90, 1.0, 0.3)])
def test_margin_is_the_estimators_half_width_at_the_expected_counts(
    voters: int, fake_mean: float, p: float
) -> None:
    m = len(CHOICES)
    share = voters / m
    # What the ballots table holds on average when every choice gets an even share.
    expected = {c: voters * fake_mean / m + (1 - p) * share + p * voters / m for c in CHOICES}
    stored = {c: round(v) for c, v in expected.items()}
    fakes = sum(stored.values()) - voters
    row = estimate(stored, CHOICES, [1 / m] * m, voters, p)[0]
    half = (row.ci95[1] - row.ci95[0]) / 2
    assert half == pytest.approx(expected_margin(voters, m, fakes / voters, p), rel=0.02)


def test_more_voters_give_a_smaller_relative_error() -> None:
    margins = [expected_margin(n, 3, 2.0) / n for n in (10, 100, 1000, 10_000)]
    assert margins == sorted(margins, reverse=True)
    assert expected_margin(10_000, 3, 2.0) / 10_000 < 0.02


def test_more_noise_gives_a_larger_error() -> None:
    assert expected_margin(100, 3, 1.0) < expected_margin(100, 3, 2.0)
    assert expected_margin(100, 3, 2.0) < expected_margin(100, 3, 2.0, p=0.3)


def test_no_voters_no_error() -> None:
    assert expected_margin(0, 3, 2.0) == 0.0


@pytest.mark.parametrize(
    "spec",
    [
        rules({"distribution": "poisson", "mean": 2, "min": 1}),
        rules({"count": 1, "distribution": "fixed"}, 2.0),
    ],
    ids=["poisson", "randomized-response"],
)
def test_margin_predicts_the_spread_of_simulated_polls(spec: PollRules) -> None:
    rng = random.Random(6)
    noise = NoiseDraws(spec)
    voters = 150
    truth = {c: voters // 3 for c in CHOICES}
    misses = []
    for _ in range(600):
        stored: Counter[str] = Counter()
        for choice, count in truth.items():
            for _ in range(count):
                stored[noise.reported(choice, rng)] += 1
                stored.update(noise.fakes(rng))
        row = estimate(
            stored, CHOICES, spec.fake_weights(), voters, spec.replacement_probability()
        )[0]
        misses.append(row.estimate - truth[row.choice])
    predicted = expected_margin(
        voters, 3, spec.noise.fake_votes.expected, spec.replacement_probability()
    )
    observed = 1.959963984540054 * statistics.pstdev(misses)
    assert math.isclose(observed, predicted, rel_tol=0.12), (observed, predicted)


def test_a_results_page_read_while_the_ballot_sink_lags_has_a_margin() -> None:
    # 4 votes stored, no ballot rows yet: the page's fake mean is (0 - 4) / 4.
    assert expected_margin(4, 3, -1.0, 0.2) == expected_margin(4, 3, 0.0, 0.2) > 0
