"""The estimator is unbiased and its 95% interval covers the truth about 95% of the time."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from typing import Any

import pytest

from privpoll.core.noise import NoiseDraws
from privpoll.core.results import estimate, summarize, verdict
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
            estimates[row.choice].append(row.raw_estimate)
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


def test_one_voter_never_gets_a_zero_width_interval() -> None:
    # Every ballot for pizza: one voter, three fakes.
    found = estimate({"pizza": 4}, CHOICES, [1 / 3] * 3, 1)
    pizza = found[0]
    assert pizza.raw_estimate > 1
    assert pizza.estimate == 1
    assert pizza.ci95[0] < pizza.ci95[1] == 1


def test_estimate_shown_lies_in_its_interval_and_the_raw_one_is_kept() -> None:
    found = estimate({"pizza": 9, "sushi": 0, "tacos": 0}, CHOICES, [1 / 3] * 3, 2)
    for row in found:
        assert row.ci95[0] <= row.estimate <= row.ci95[1]
        assert 0 <= row.estimate <= 2
    assert found[1].raw_estimate < 0


def test_verdict_calls_a_winner_only_when_intervals_separate() -> None:
    close = estimate({"pizza": 5, "sushi": 4, "tacos": 3}, CHOICES, [1 / 3] * 3, 3)
    assert verdict(close)["winner"] is None
    assert "No winner can be called" in verdict(close)["message"]
    clear = estimate({"pizza": 400, "sushi": 100, "tacos": 100}, CHOICES, [1 / 3] * 3, 300)
    assert verdict(clear)["winner"] == "pizza"


# Known answers: every number below was derived by hand from docs/design.md's rule, never by
# running privpoll, and is written as a literal. Z = 1.959963984540054 (two-sided 95%).
#     c_j = (N_j - F w_j - p n / m) / (1 - p),                      F = T - n (at least 0)
#     s^2(c) = (F w_j (1 - w_j) + c a (1 - a) + (n - c) b (1 - b)) / (1 - p)^2
#     a = 1 - p + p/m, b = p/m, c' = c_j clipped to [0, n] (the estimate shown; c_j is kept
#     as rawEstimate); h0 = Z s(c') + 1/(2 (1 - p)), the first interval c' -+ h0 in [0, n];
#     h = Z max(s(lo0), s(hi0)) + 1/(2 (1 - p)); the interval c' -+ h in [0, n], its ends
#     rounded outwards to hundredths.


def test_known_answer_uniform_fakes_with_a_choice_nobody_and_one_everybody_picked() -> None:
    """n = 6 voters all picked pizza; F = 18 - 6 = 12 fakes, w = 1/3 each, p = 0.

    c = (10 - 4, 4 - 4, 4 - 4) = (6, 0, 0). With p = 0, a(1 - a) = b(1 - b) = 0: s^2 is
    12 (1/3)(2/3) = 8/3 whatever c, Z s = 3.2006077842368734, h = 3.7006077842368734.
    pizza: 6 -+ 3.7006 -> [2.29, 6.0] (6 is all voters); sushi, tacos: [0.0, 3.71].
    """
    found = estimate({"pizza": 10, "sushi": 4, "tacos": 4}, CHOICES, [1 / 3] * 3, 6)
    assert [(r.choice, r.stored, r.estimate, r.raw_estimate, r.ci95) for r in found] == [
        ("pizza", 10, 6.0, 6.0, (2.29, 6.0)),
        ("sushi", 4, 0.0, 0.0, (0.0, 3.71)),
        ("tacos", 4, 0.0, 0.0, (0.0, 3.71)),
    ]


def test_known_answer_weighted_fakes() -> None:
    """Weights w = (1/2, 1/4, 1/4), n = 4 voters all picked sushi, F = 12 - 4 = 8.

    F w = (4, 2, 2), so c = (4 - 4, 6 - 2, 2 - 2) = (0, 4, 0).
    s^2 = F w (1 - w) = (2, 1.5, 1.5): Z s = (2.771807648699356, 2.400455838177655, same),
    h = Z s + 1/2. pizza [0, 3.28]; sushi 4 -+ 2.9005 -> [1.09, 4] (at most n); tacos
    [0, 2.91].
    """
    found = estimate({"pizza": 4, "sushi": 6, "tacos": 2}, CHOICES, [0.5, 0.25, 0.25], 4)
    assert [(r.estimate, r.ci95) for r in found] == [
        (0.0, (0.0, 3.28)),
        (4.0, (1.09, 4.0)),
        (0.0, (0.0, 2.91)),
    ]


def test_known_answer_randomized_response_where_clipping_changes_the_interval() -> None:
    """p = 1/2, m = 3: a = 2/3, b = 1/6, a(1 - a) = 2/9, b(1 - b) = 5/36. n = 12, T = 18,
    F = 6, w = 1/3, half a step 1/(2 (1 - p)) = 1: c_j = (N_j - 2 - 2) / (1/2) = 2 (N_j - 4).

    pizza N = 3: c = -2 (rawEstimate), shown c' = 0: s^2(0) = (4/3 + 12 (5/36)) / (1/4) = 12,
      h0 = 6.7895 + 1 -> [0, 7.79]; s^2(7.79) = (4/3 + 7.79 (2/9) + 4.21 (5/36)) 4 = 14.60:
      h = 7.4881 + 1 = 8.4881 -> [0, 8.49]. (Centred on the raw -2, or with the variance at
      a negative count, the interval would claim more than the data give.)
    sushi N = 11: c = 14, shown c' = 12: s^2(12) = (4/3 + 12 (2/9)) 4 = 16, h0 = 8.8399 ->
      [3.16, 12]; s^2(3.16) = (4/3 + 3.16 (2/9) + 8.84 (5/36)) 4 = 13.05 < 16: h = 8.8399
      -> [3.16, 12.0].
    tacos N = 4: c = 0: as pizza -> [0, 8.49].
    """
    found = estimate({"pizza": 3, "sushi": 11, "tacos": 4}, CHOICES, [1 / 3] * 3, 12, 0.5)
    assert [(r.raw_estimate, r.estimate, r.ci95) for r in found] == [
        (-2.0, 0.0, (0.0, 8.49)),
        (14.0, 12.0, (3.16, 12.0)),
        (0.0, 0.0, (0.0, 8.49)),
    ]


def test_fewer_stored_ballots_than_votes_counts_no_fakes() -> None:
    """The ballot sink behind the actor sink: T = 4 < n = 5 means F = 0, not -1.

    c = N (3, 1, 0) and s = 0 (no fakes, p = 0): each interval is half a step (1/2) wide on
    either side, never a point: [2.5, 3.5], [0.5, 1.5], [0, 0.5].
    """
    found = estimate({"pizza": 3, "sushi": 1}, CHOICES, [1 / 3] * 3, 5)
    assert [(r.estimate, r.ci95) for r in found] == [
        (3.0, (2.5, 3.5)),
        (1.0, (0.5, 1.5)),
        (0.0, (0.0, 0.5)),
    ]


def test_summary_known_answer() -> None:
    """The results document of the randomized-response case above (probability 1/2, so
    epsilon = ln(1 + 3 (1/2) / (1/2)) = ln 4), with 11 distinct voters among 12 votes."""
    spec = rules({"distribution": "fixed", "count": 1}, randomizedResponse={"probability": 0.5})
    found = summarize(spec, "Closed", 12, 11, {"pizza": 3, "sushi": 11, "tacos": 4})
    assert found["phase"] == "Closed"
    assert found["votes"] == {"total": 12, "uniqueVoters": 11, "storedBallots": 18, "duplicates": 1}
    assert found["choices"] == [
        {"choice": "pizza", "stored": 3, "estimate": 0.0, "rawEstimate": -2.0, "ci95": (0.0, 8.49)},
        {
            "choice": "sushi",
            "stored": 11,
            "estimate": 12.0,
            "rawEstimate": 14.0,
            "ci95": (3.16, 12.0),
        },
        {"choice": "tacos", "stored": 4, "estimate": 0.0, "rawEstimate": 0.0, "ci95": (0.0, 8.49)},
    ]
    assert found["epsilon"] == pytest.approx(1.3862943611198906, abs=1e-12)
    assert found["noise"]["randomizedResponse"] == {"probability": 0.5}
    assert (
        summarize(rules({"distribution": "fixed", "count": 1}), "Open", 0, 0, {})["epsilon"] is None
    )


def test_known_answer_estimates_are_rounded_to_hundredths() -> None:
    """n = 1, T = 3, F = 2, w = 1/3: c = (2 - 2/3, 1 - 2/3, 0 - 2/3) = (1.333.., 0.333..,
    -0.666..), rounded to (1.33, 0.33, -0.67) as rawEstimate; shown clipped to [0, 1]:
    (1, 0.33, 0). s^2 = 2 (2/9) = 4/9 whatever c, h = 1.3066426563600360 + 1/2: every
    interval covers all of [0, 1]."""
    found = estimate({"pizza": 2, "sushi": 1}, CHOICES, [1 / 3] * 3, 1)
    assert [(r.raw_estimate, r.estimate, r.ci95) for r in found] == [
        (1.33, 1.0, (0.0, 1.0)),
        (0.33, 0.33, (0.0, 1.0)),
        (-0.67, 0.0, (0.0, 1.0)),
    ]
