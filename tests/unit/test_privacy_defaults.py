"""The default noise keeps its two promises (docs/privacy.md, "The defaults, and why")."""

from __future__ import annotations

import math

import pytest

from privpoll.core.noise import epsilon
from privpoll.core.results import estimate
from privpoll.core.spec import PollRules

CHOICES = ["pizza", "sushi", "tacos"]


def test_a_poll_that_says_nothing_about_noise_gets_randomized_response() -> None:
    rules = PollRules.model_validate({"title": "t", "choices": CHOICES})
    assert epsilon(rules.replacement_probability(), 3) == pytest.approx(2.5)
    assert rules.noise.fake_votes.expected == 2
    # Certainty is impossible: under a uniform prior no posterior passes e^eps / (e^eps + 2).
    assert math.exp(2.5) / (math.exp(2.5) + 2) < 0.86


def test_a_noise_block_gets_exactly_what_it_says() -> None:
    rules = PollRules.model_validate(
        {
            "title": "t",
            "choices": CHOICES,
            "noise": {"fakeVotes": {"distribution": "poisson", "mean": 2, "min": 1}},
        }
    )
    assert rules.noise.randomized_response is None


@pytest.mark.parametrize("picked", [0, 333, 500, 1000])
def test_defaults_keep_the_interval_within_six_percent_at_1000_voters(picked: int) -> None:
    rules = PollRules.model_validate({"title": "t", "choices": CHOICES})
    n, m = 1000, len(CHOICES)
    p = rules.replacement_probability()
    fakes = n * rules.noise.fake_votes.expected
    # What the ballots table holds on average when `picked` voters choose pizza.
    truth = {"pizza": picked, "sushi": (n - picked) // 2, "tacos": n - picked - (n - picked) // 2}
    stored = {c: round(fakes / m + (1 - p) * truth[c] + p * n / m) for c in CHOICES}
    for row in estimate(stored, CHOICES, rules.fake_weights(), n, p):
        lo, hi = row.ci95
        assert max(hi - row.estimate, row.estimate - lo) <= 0.06 * n, row
