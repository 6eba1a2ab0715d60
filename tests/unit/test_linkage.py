"""The linkage attacker, against simulated databases whose every commit it sees."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence

import pytest

from privpoll.audit import linkage
from privpoll.audit.linkage import CERTAIN, NoiseModel, Row, Snapshot, attack
from privpoll.core.envelope import Actor, Ballot, Envelope, seal
from privpoll.core.noise import NoiseDraws
from privpoll.core.spec import PollRules

CHOICES = ["pizza", "sushi", "tacos"]


def rules(**noise: object) -> PollRules:
    return PollRules.model_validate({"title": "t", "choices": CHOICES, "noise": noise})


def runs(total: int, low: int, high: int, rng: random.Random) -> list[int]:
    """Sizes of consecutive commits of one sink: at least ``low`` each, the last one too."""
    sizes: list[int] = []
    left = total
    while left >= 2 * low:
        size = min(rng.randint(low, high), left - low)
        sizes.append(size)
        left -= size
    if left:
        sizes.append(left)
    return sizes


def record(
    envelopes: Sequence[Envelope],
    actor_sizes: Sequence[int],
    ballot_sizes: Sequence[int],
    rng: random.Random,
    *,
    joint: bool = False,
) -> list[Snapshot]:
    """The two sinks' commits in a random interleaving, a snapshot after each one."""
    xid = iter(range(1000, 10**9))
    commits: list[tuple[str, list[Row]]] = []
    for table, sizes in (("actors", actor_sizes), ("ballots", ballot_sizes)):
        start = 0
        for size in sizes:
            marker = next(xid)
            part = envelopes[start : start + size]
            start += size
            if table == "actors":
                rows = [Row(str(e.actor.entry), e.actor.voter, marker) for e in part]
            else:
                rows = [Row(str(b.id), b.choice, marker) for e in part for b in e.ballots]
            commits.append((table, rows))
    if joint:
        # One transaction per vote writes both rows (LimeSurvey-style).
        half = len(commits) // 2
        merged = []
        for (_, voters), (_, papers) in zip(commits[:half], commits[half:], strict=True):
            marker = next(xid)
            merged.append(
                (
                    "both",
                    [Row(r.key, r.value, marker) for r in voters]
                    + [Row(r.key, r.value, marker) for r in papers],
                )
            )
        order = merged
    else:
        # Each sink commits in stream order; the two interleave at random.
        actor_commits = [c for c in commits if c[0] == "actors"]
        ballot_commits = [c for c in commits if c[0] == "ballots"]
        order = []
        while actor_commits or ballot_commits:
            pick = actor_commits if (rng.random() < 0.5 and actor_commits) else ballot_commits
            pick = pick or actor_commits
            order.append(pick.pop(0))
    snapshots: list[Snapshot] = []
    actors: list[Row] = []
    ballots: list[Row] = []
    for table, rows in order:
        if table == "both":
            half = len(rows) // 2
            actors, ballots = actors + rows[:half], ballots + rows[half:]
        elif table == "actors":
            actors = actors + rows
        else:
            ballots = ballots + rows
        snapshots.append(Snapshot(tuple(actors), tuple(ballots)))
    last = snapshots[-1]
    snapshots[-1] = Snapshot(last.actors, last.ballots, closed=True)
    return snapshots


def cast(
    poll: PollRules, truth: Sequence[str], rng: random.Random
) -> tuple[list[Envelope], dict[str, str]]:
    noise = NoiseDraws(poll)
    envelopes = [seal(noise, f"voter-{i}", c, rng) for i, c in enumerate(truth)]
    return envelopes, {f"voter-{i}": c for i, c in enumerate(truth)}


def test_one_transaction_per_vote_exposes_every_voter() -> None:
    rng = random.Random(1)
    truth = [rng.choice(CHOICES) for _ in range(40)]
    plain = [
        Envelope(
            id=uuid.uuid4(),
            actor=Actor(entry=uuid.uuid4(), voter=f"voter-{i}"),
            ballots=[Ballot(id=uuid.uuid4(), choice=c)],
        )
        for i, c in enumerate(truth)
    ]
    snapshots = record(plain, [1] * 40, [1] * 40, rng, joint=True)
    found = attack(snapshots, NoiseModel.no_noise(CHOICES))
    assert found.exposed == 40
    assert found.accuracy({f"voter-{i}": c for i, c in enumerate(truth)}) == 1.0


def test_a_lone_envelope_whose_ballots_agree_is_exposed() -> None:
    rng = random.Random(2)
    poll = rules(fakeVotes={"distribution": "fixed", "count": 2})
    truth = ["pizza", "sushi", "tacos", "pizza"]
    envelopes, _ = cast(poll, truth, rng)
    # Force the first envelope's fakes to agree with its real ballot.
    first = envelopes[0]
    envelopes[0] = first.model_copy(
        update={"ballots": [b.model_copy(update={"choice": "pizza"}) for b in first.ballots]}
    )
    snapshots = record(envelopes, [1, 1, 1, 1], [1, 1, 1, 1], rng)
    found = attack(snapshots, NoiseModel.of(poll)).per_voter()
    assert found["voter-0"].largest >= CERTAIN
    assert found["voter-0"].guess == 0
    # The others hide behind at least one fake of another choice only if the draw gave one.
    for i in range(1, 4):
        env = envelopes[i]
        agree = len({b.choice for b in env.ballots}) == 1
        assert (found[f"voter-{i}"].largest >= CERTAIN) == agree


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_default_noise_in_batches_of_ten_exposes_nobody(seed: int) -> None:
    rng = random.Random(seed)
    poll = rules()
    truth = [
        CHOICES[0] if i % 10 < 5 else CHOICES[1] if i % 10 < 8 else CHOICES[2] for i in range(300)
    ]
    rng.shuffle(truth)
    envelopes, _ = cast(poll, truth, rng)
    snapshots = record(envelopes, runs(300, 10, 25, rng), runs(300, 10, 25, rng), rng)
    found = attack(snapshots, NoiseModel.of(poll))
    assert found.aligned
    assert found.exposed == 0
    assert found.largest_posterior < CERTAIN
    # The commits do tell the attacker something about some voters, never everything.
    assert found.largest_posterior > max(found.prior)


def test_randomized_response_caps_the_posterior_even_for_a_lone_vote() -> None:
    rng = random.Random(6)
    epsilon = 1.0
    poll = rules(
        fakeVotes={"distribution": "fixed", "count": 0, "min": 0},
        randomizedResponse={"epsilon": epsilon},
    )
    truth = [rng.choice(CHOICES) for _ in range(200)]
    envelopes, _ = cast(poll, truth, rng)
    snapshots = record(envelopes, [1] * 200, [1] * 200, rng)
    found = attack(snapshots, NoiseModel.of(poll), prior=[1 / 3] * 3)
    bound = math.exp(epsilon) / (math.exp(epsilon) + 2)
    assert found.exposed == 0
    assert found.largest_posterior == pytest.approx(bound, rel=1e-9)


def test_the_posterior_is_calibrated() -> None:
    """Among voters the attacker gives p to its guess, about p of the guesses are right."""
    rng = random.Random(7)
    poll = rules(fakeVotes={"distribution": "poisson", "mean": 1.5, "min": 1})
    prior = (0.5, 0.3, 0.2)
    truth = rng.choices(CHOICES, weights=prior, k=3000)
    envelopes, by_voter = cast(poll, truth, rng)
    snapshots = record(envelopes, runs(3000, 3, 8, rng), runs(3000, 3, 8, rng), rng)
    found = attack(snapshots, NoiseModel.of(poll), prior=prior)
    expected = found.expected_accuracy
    actual = found.accuracy(by_voter)
    assert actual > max(prior), "small commits do leak"
    assert abs(actual - expected) < 4 * math.sqrt(expected * (1 - expected) / 3000)


def test_after_a_rewrite_every_voter_looks_the_same() -> None:
    rng = random.Random(8)
    poll = rules()
    truth = [rng.choice(CHOICES) for _ in range(50)]
    envelopes, _ = cast(poll, truth, rng)
    actors = tuple(Row(str(e.actor.entry), e.actor.voter, 7) for e in envelopes)
    ballots = tuple(Row(str(b.id), b.choice, 7) for e in envelopes for b in e.ballots)
    found = attack([Snapshot(actors, ballots, closed=True)], NoiseModel.of(poll))
    assert found.actor_commits == found.ballot_commits == 1
    assert len({f.posterior for f in found.findings}) == 1


def test_the_attack_uses_the_history_before_a_rewrite() -> None:
    rng = random.Random(9)
    poll = rules(fakeVotes={"distribution": "fixed", "count": 1})
    truth = [rng.choice(CHOICES) for _ in range(30)]
    envelopes, _ = cast(poll, truth, rng)
    history = record(envelopes, [1] * 30, [1] * 30, rng)
    rewritten = Snapshot(
        tuple(Row(f"new-{r.key}", r.value, 99) for r in history[-1].actors),
        tuple(Row(f"new-{r.key}", r.value, 99) for r in history[-1].ballots),
        closed=True,
    )
    found = attack([*history, rewritten], NoiseModel.of(poll))
    assert found.epoch == 0
    assert found.actor_commits == 30


def test_a_sink_that_is_behind_leaves_its_voters_at_the_prior() -> None:
    rng = random.Random(10)
    poll = rules()
    truth = [rng.choice(CHOICES) for _ in range(60)]
    envelopes, _ = cast(poll, truth, rng)
    snapshots = record(envelopes, [20, 20, 20], [20, 20, 20], rng)
    # The ballot sink has written only its first commit when the thief copies the tables.
    actors = tuple(r for s in snapshots for r in s.actors)
    seen = {r.key: r for r in actors}
    first_ballots = next(s for s in snapshots if s.ballots).ballots
    partial = Snapshot(tuple(seen.values()), first_ballots)
    found = attack([partial], NoiseModel.of(poll), prior=[1 / 3] * 3)
    assert found.aligned
    assert found.exposed == 0


def test_large_commits_use_an_accurate_approximation(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = (180, 150, 120)
    model = NoiseModel.of(rules())
    channel = linkage._Channel(model, (0.45, 0.35, 0.2))
    exact = linkage._Cell(counts, channel)
    monkeypatch.setattr(linkage, "EXACT_LIMIT", 10)
    approx = linkage._Cell(counts, channel)
    for e in (120, 150, 180):
        assert approx.true_posterior(e) == pytest.approx(exact.true_posterior(e), abs=2e-3)
        assert approx.loglik(e) - approx.loglik(150) == pytest.approx(
            exact.loglik(e) - exact.loglik(150), abs=0.05
        )
