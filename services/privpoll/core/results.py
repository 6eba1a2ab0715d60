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
    estimate: float
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
    out = []
    for choice, w in zip(choices, weights, strict=True):
        count = stored.get(choice, 0)
        c_hat = (count - fakes * w - p * n / m) / (1 - p)
        c_clip = min(max(c_hat, 0.0), float(n))
        variance = (fakes * w * (1 - w) + c_clip * a * (1 - a) + (n - c_clip) * b * (1 - b)) / (
            1 - p
        ) ** 2
        half = Z95 * math.sqrt(max(variance, 0.0))
        # The true count lies in [0, n]; so does the interval.
        lo = min(max(c_hat - half, 0.0), float(n))
        hi = max(min(c_hat + half, float(n)), 0.0)
        out.append(
            ChoiceResult(
                choice=choice,
                stored=count,
                estimate=round(c_hat, 2),
                ci95=(round(lo, 2), round(hi, 2)),
            )
        )
    return out


def summarize(
    rules: PollRules, phase: str, votes: int, voters: int, stored: Mapping[str, int]
) -> dict[str, Any]:
    """The results document of the API (and of the Poll's status on Kubernetes)."""
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
    c = n / m
    # Fewer stored ballots than votes (the ballot sink not caught up with the actor sink
    # yet) would mean negative fakes: count none.
    fakes = n * max(fake_mean, 0.0)
    a, b = 1 - p + p / m, p / m
    variance = (fakes * w * (1 - w) + c * a * (1 - a) + (n - c) * b * (1 - b)) / (1 - p) ** 2
    return Z95 * math.sqrt(variance)
