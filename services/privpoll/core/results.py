"""De-biased estimates and honest 95% intervals from the noisy stored counts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from privpoll.core.noise import epsilon
from privpoll.core.spec import PollRules

Z95 = 1.959963984540054


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ChoiceResult(_Out):
    choice: str
    stored: int
    # Clipped to the possible counts [0, n]: what every page shows, inside its interval.
    estimate: float
    # The unbiased estimate before clipping (it can dip below 0 or exceed n).
    raw_estimate: float
    ci95: tuple[float, float]


class VoteCounts(_Out):
    total: int
    unique_voters: int
    stored_ballots: int
    duplicates: int


def estimate(
    stored: Mapping[str, int],
    choices: Sequence[str],
    weights: Sequence[float],
    votes: int,
    p: float = 0.0,
) -> list[ChoiceResult]:
    """Unbiased count per choice, from docs/design.md's estimator.

    ``stored`` is N_j (ballots per choice, real and fake), ``votes`` is n (real votes, i.e.
    actor rows), ``weights`` the fake-choice weights w_j and ``p`` the randomized-response
    replacement probability.
    """
    m = len(choices)
    n = votes
    total = sum(stored.get(c, 0) for c in choices)
    fakes = max(total - n, 0)
    a, b = 1 - p + p / m, p / m

    def variance(c: float, w: float) -> float:
        return (fakes * w * (1 - w) + c * a * (1 - a) + (n - c) * b * (1 - b)) / (1 - p) ** 2

    # One stored ballot moves an estimate by 1/(1-p): half of that step widens every
    # interval (a continuity correction), which keeps the coverage of small polls at 95%.
    step = 0.5 / (1 - p)
    out = []
    for choice, w in zip(choices, weights, strict=True):
        count = stored.get(choice, 0)
        c_hat = (count - fakes * w - p * n / m) / (1 - p)
        # The true count lies in [0, n]: so do the estimate shown and its interval, centred
        # on it (never farther from the truth than the raw estimate).
        c_clip = min(max(c_hat, 0.0), float(n))
        half = Z95 * math.sqrt(max(variance(c_clip, w), 0.0)) + step
        # The variance depends on the true count: take the largest over the interval (it is
        # linear in c, so one of the ends), lest a lucky low estimate claim a narrow interval.
        lo, hi = max(c_clip - half, 0.0), min(c_clip + half, float(n))
        widest = max(variance(lo, w), variance(hi, w), 0.0)
        half = Z95 * math.sqrt(widest) + step
        lo, hi = max(c_clip - half, 0.0), min(c_clip + half, float(n))
        if n == 0:
            lo = hi = 0.0
        out.append(
            ChoiceResult(
                choice=choice,
                stored=count,
                estimate=round(c_clip, 2),
                raw_estimate=round(c_hat, 2),
                ci95=(_round_down(lo), _round_up(hi)),
            )
        )
    return out


def _round_down(value: float) -> float:
    return math.floor(value * 100) / 100


def _round_up(value: float) -> float:
    return math.ceil(value * 100 - 1e-9) / 100


def verdict(choices: Sequence[ChoiceResult]) -> dict[str, Any]:
    """Whether the intervals separate the leading choice from the next: a winner, or none.

    The leader's interval must lie wholly above every other choice's; otherwise the noise
    could have put any of the overlapping ones first, and the notice says so.
    """
    ranked = sorted(choices, key=lambda c: c.estimate, reverse=True)
    if not ranked or ranked[0].ci95[1] == 0:
        return {"winner": None, "message": "No votes are counted yet."}
    leader = ranked[0]
    close = [c.choice for c in ranked[1:] if c.ci95[1] >= leader.ci95[0]]
    if close:
        names = [leader.choice, *close]
        tied = f"{', '.join(names[:-1])} and {names[-1]}"
        return {
            "winner": None,
            "message": f"No winner can be called: {tied} are too close to tell apart "
            "(their 95% intervals overlap).",
        }
    return {
        "winner": leader.choice,
        "message": f"{leader.choice} leads: its 95% interval lies above every other choice's.",
    }


def summarize(
    rules: PollRules,
    phase: str,
    votes: int,
    voters: int,
    stored: Mapping[str, int],
    pending: int | None = None,
) -> dict[str, Any]:
    """The results document of the API (and of the Poll's status on Kubernetes).

    ``pending``: votes answered 202 but not yet in the database (None: not known)."""
    p = rules.replacement_probability()
    choices = estimate(stored, rules.choices, rules.fake_weights(), votes, p)
    counts = VoteCounts(
        total=votes,
        unique_voters=voters,
        stored_ballots=sum(stored.values()),
        duplicates=votes - voters,
    )
    return {
        "phase": phase,
        "pending": pending,
        "verdict": verdict(choices),
        "choices": [c.model_dump(by_alias=True) for c in choices],
        "votes": counts.model_dump(by_alias=True),
        "noise": rules.noise.model_dump(mode="json", by_alias=True, exclude_none=True),
        "epsilon": epsilon(p, len(rules.choices)),
    }


def expected_margin(voters: int, choices: int, fake_mean: float, p: float = 0.0) -> float:
    """The 95% half-width a poll can expect before anyone votes, in votes.

    The sigma_j of docs/design.md for a choice with an even share (n/m) of ``voters`` real votes,
    and the expected number of fake ballots F = n·E[K] spread uniformly over the ``choices``: what
    the creation form previews (its JavaScript mirrors this).
    """
    if voters <= 0 or choices < 1:
        return 0.0
    m, n = choices, float(voters)
    w = 1 / m
    # Fewer stored ballots than votes (the ballot sink not caught up with the actor sink
    # yet) would mean negative fakes: count none.
    fakes = n * max(fake_mean, 0.0)
    a, b = 1 - p + p / m, p / m

    def variance(c: float) -> float:
        return (fakes * w * (1 - w) + c * a * (1 - a) + (n - c) * b * (1 - b)) / (1 - p) ** 2

    # As ``estimate`` does: the widest variance over the interval, plus half a step.
    c, step = n / m, 0.5 / (1 - p)
    half = Z95 * math.sqrt(variance(c)) + step
    lo, hi = max(c - half, 0.0), min(c + half, n)
    return Z95 * math.sqrt(max(variance(lo), variance(hi))) + step
