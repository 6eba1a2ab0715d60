"""Nothing in an envelope tells which ballot is the real one."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import statistics
import uuid
from array import array
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from privpoll.core import envelope
from privpoll.core.envelope import Envelope, seal, seal_bytes
from privpoll.core.noise import NoiseDraws
from privpoll.core.spec import PollRules

labels = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
)


@st.composite
def polls(draw: st.DrawFn) -> PollRules:
    choices = draw(st.lists(labels, min_size=2, max_size=6, unique=True))
    fake_votes = draw(
        st.sampled_from(
            [
                {"distribution": "fixed", "count": 3},
                {"distribution": "poisson", "mean": 2, "min": 1},
                {"distribution": "uniform", "min": 1, "max": 5},
            ]
        )
    )
    return PollRules.model_validate(
        {"title": "t", "choices": choices, "noise": {"fakeVotes": fake_votes}}
    )


@settings(max_examples=200, deadline=None)
@given(poll=polls(), voter=labels, data=st.data())
def test_every_ballot_looks_alike(poll: PollRules, voter: str, data: st.DataObject) -> None:
    choice = data.draw(st.sampled_from(poll.choices))
    envelope = seal(NoiseDraws(poll), voter, choice)
    document = json.loads(envelope.encode())
    assert set(document) == {"id", "actor", "ballots"}
    assert document["actor"] == {"entry": str(envelope.actor.entry), "voter": voter}
    assert len(document["ballots"]) >= 2, "at least one fake ballot beside the real one"
    ids = [uuid.UUID(b["id"]) for b in document["ballots"]]
    for ballot in document["ballots"]:
        assert set(ballot) == {"id", "choice"}, "no field could mark the real ballot"
        assert ballot["choice"] in poll.choices
    for value in [*ids, envelope.id, envelope.actor.entry]:
        assert value.version == 4
    assert len({*ids, envelope.id, envelope.actor.entry}) == len(ids) + 2
    assert choice in [b["choice"] for b in document["ballots"]]
    assert Envelope.decode(envelope.encode()) == envelope


@settings(max_examples=100, deadline=None)
@given(poll=polls(), voter=labels, data=st.data())
def test_a_sink_reads_what_the_ingest_sealed(
    poll: PollRules, voter: str, data: st.DataObject
) -> None:
    sealed = seal(NoiseDraws(poll), voter, data.draw(st.sampled_from(poll.choices)))
    read = envelope.read(sealed.encode())
    assert read["id"] == str(sealed.id)
    assert read["actor"] == {"entry": str(sealed.actor.entry), "voter": voter}
    assert read["ballots"] == [{"id": str(b.id), "choice": b.choice} for b in sealed.ballots]


def test_a_sink_refuses_what_is_no_envelope() -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    good = json.loads(seal(NoiseDraws(poll), "v", "a").encode())
    broken = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "actor"},
        {**good, "id": "not-a-uuid"},
        {**good, "id": good["id"].upper()},  # not how the ingest writes an id
        {**good, "actor": {**good["actor"], "voter": 7}},
        {**good, "actor": {**good["actor"], "seen": "09:00"}},
        {**good, "ballots": [{"id": good["ballots"][0]["id"]}]},
        {**good, "ballots": [{**good["ballots"][0], "real": True}]},
    ]
    for document in broken:
        with pytest.raises(ValidationError):
            envelope.read(json.dumps(document).encode())
    with pytest.raises(ValidationError):
        envelope.read(b"{not json")


# ``seal_bytes``: what ``seal(...).encode()`` means, without models. Each check of ``seal``
# above has its twin here, run on both (``seal`` with a seeded rng where it had one).

Sealer = Callable[[NoiseDraws, str, str], tuple[str, bytes]]


def _seal_encoded(noise: NoiseDraws, voter: str, choice: str) -> tuple[str, bytes]:
    sealed = seal(noise, voter, choice)
    return str(sealed.id), sealed.encode()


def _seeded_seal() -> Sealer:
    rng = random.Random(7)

    def sealer(noise: NoiseDraws, voter: str, choice: str) -> tuple[str, bytes]:
        sealed = seal(noise, voter, choice, rng)
        return str(sealed.id), sealed.encode()

    return sealer


sealers = pytest.mark.parametrize("sealer", [_seal_encoded, seal_bytes], ids=["seal", "bytes"])
seeded_sealers = pytest.mark.parametrize(
    "make_sealer", [_seeded_seal, lambda: seal_bytes], ids=["seal", "bytes"]
)
# Any text: quotes, backslashes, control characters, any plane (no lone surrogates: no text).
voters = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)
NASTY_VOTERS = [
    '"',
    "\\",
    '\\"',
    "\x00\x01\x1f\x7f",
    "tab\there\nnew\rline\x08\x0c",
    "\u2028\u2029\ufeff",
    "é ü 中文 😀 \U0010ffff",
    '"},"ballots":[],"x":{"',
    "</script>",
    " spaced ",
]


def _ballot_choices(data: bytes) -> list[str]:
    return [b["choice"] for b in envelope.read(data)["ballots"]]


def _check_id(text: str) -> uuid.UUID:
    value = uuid.UUID(text)
    assert value.version == 4
    assert value.variant == uuid.RFC_4122
    assert str(value) == text, "lowercase and hyphenated, as encode writes a uuid"
    return value


@sealers
@settings(max_examples=200, deadline=None)
@given(poll=polls(), voter=voters, data=st.data())
def test_sealed_bytes_are_an_envelope(
    sealer: Sealer, poll: PollRules, voter: str, data: st.DataObject
) -> None:
    choice = data.draw(st.sampled_from(poll.choices))
    sealed_id, sealed = sealer(NoiseDraws(poll), voter, choice)
    decoded = Envelope.decode(sealed)
    assert decoded.encode() == sealed, "the very bytes pydantic writes"
    read = envelope.read(sealed)
    assert sealed_id == str(decoded.id) == read["id"]
    assert decoded.actor.voter == read["actor"]["voter"] == voter
    document = json.loads(sealed)
    assert list(document) == ["id", "actor", "ballots"]
    assert list(document["actor"]) == ["entry", "voter"]
    lowest = poll.noise.fake_votes.lowest
    assert len(document["ballots"]) >= 1 + lowest
    for ballot in document["ballots"]:
        assert list(ballot) == ["id", "choice"]
        assert ballot["choice"] in poll.choices
    ids = [_check_id(i) for i in [sealed_id, read["actor"]["entry"]]] + [
        _check_id(b["id"]) for b in read["ballots"]
    ]
    assert len(set(ids)) == len(ids)
    assert choice in [b["choice"] for b in document["ballots"]]  # no randomized response


@sealers
@pytest.mark.parametrize("voter", NASTY_VOTERS)
def test_any_voter_id_round_trips(sealer: Sealer, voter: str) -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ['say "hi"', "back\\slash", "é"]})
    _, sealed = sealer(NoiseDraws(poll), voter, 'say "hi"')
    assert Envelope.decode(sealed).actor.voter == voter
    assert envelope.read(sealed)["actor"]["voter"] == voter
    assert json.loads(sealed)["actor"]["voter"] == voter
    assert set(_ballot_choices(sealed)) <= set(poll.choices)
    assert Envelope.decode(sealed).encode() == sealed


@sealers
def test_a_voter_that_is_no_text_is_refused(sealer: Sealer) -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    with pytest.raises(ValueError, match="surrogate"):
        sealer(NoiseDraws(poll), "lone \ud800", "a")


@seeded_sealers
def test_real_ballot_position_is_uniform_either_way(make_sealer: Callable[[], Sealer]) -> None:
    poll = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["real", "fake"],
            "noise": {
                "fakeVotes": {"distribution": "fixed", "count": 3},
                "choiceWeights": {"real": 1e-12, "fake": 1},
            },
        }
    )
    noise, sealer = NoiseDraws(poll), make_sealer()
    positions = Counter(
        _ballot_choices(sealer(noise, "v", "real")[1]).index("real") for _ in range(8000)
    )
    # 2,000 expected each, a standard deviation about 39.
    assert set(positions) == {0, 1, 2, 3}
    for count in positions.values():
        assert 1800 < count < 2200, positions


@seeded_sealers
@pytest.mark.parametrize(
    ("fake_votes", "probabilities"),
    [
        ({"distribution": "fixed", "count": 3}, {3: 1.0}),
        ({"distribution": "uniform", "min": 1, "max": 4}, dict.fromkeys(range(1, 5), 0.25)),
        (
            {"distribution": "poisson", "mean": 2, "min": 1},  # K = 1 + Poisson(1)
            {1 + k: math.exp(-1) / math.factorial(k) for k in range(5)},
        ),
        (
            {"distribution": "poisson", "mean": 3.5, "min": 3},  # K = 3 + Poisson(0.5)
            {3 + k: math.exp(-0.5) * 0.5**k / math.factorial(k) for k in range(4)},
        ),
    ],
    ids=["fixed", "uniform", "poisson", "poisson-half"],
)
def test_fake_ballots_follow_the_noise_spec(
    make_sealer: Callable[[], Sealer],
    fake_votes: dict[str, object],
    probabilities: dict[int, float],
) -> None:
    poll = PollRules.model_validate(
        {"title": "t", "choices": ["a", "b"], "noise": {"fakeVotes": fake_votes}}
    )
    noise, sealer = NoiseDraws(poll), make_sealer()
    draws = 6000
    counts = Counter(len(_ballot_choices(sealer(noise, "v", "a")[1])) - 1 for _ in range(draws))
    assert min(counts) >= poll.noise.fake_votes.lowest
    if fake_votes["distribution"] == "uniform":
        assert max(counts) <= 4
    for k, p in probabilities.items():
        spread = 5 * math.sqrt(draws * p * (1 - p)) + 1
        assert abs(counts[k] - draws * p) <= spread, (k, counts)
    assert math.isclose(
        statistics.fmean(counts.elements()), poll.noise.fake_votes.expected, rel_tol=0.04
    )


@sealers
@pytest.mark.parametrize("count", [0, 1, 2, 5, 100])
def test_fixed_counts_give_exactly_one_plus_count_ballots(sealer: Sealer, count: int) -> None:
    poll = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["a", "b", "c"],
            "noise": {
                "fakeVotes": {"distribution": "fixed", "count": count, "min": 0},
                "randomizedResponse": {"probability": 0.5},
            },
        }
    )
    noise = NoiseDraws(poll)
    for _ in range(50):
        sealed_id, sealed = sealer(noise, "v", "a")
        read = envelope.read(sealed)
        assert len(read["ballots"]) == 1 + count
        ids = [sealed_id, read["actor"]["entry"], *(b["id"] for b in read["ballots"])]
        assert len({_check_id(i) for i in ids}) == count + 3


@seeded_sealers
def test_fake_choices_follow_the_weights(make_sealer: Callable[[], Sealer]) -> None:
    poll = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["a", "b", "c"],
            "noise": {
                "fakeVotes": {"distribution": "fixed", "count": 3},
                "choiceWeights": {"a": 1, "b": 3, "c": 6},
            },
        }
    )
    noise, sealer = NoiseDraws(poll), make_sealer()
    seen: Counter[str] = Counter()
    envelopes = 4000
    for _ in range(envelopes):
        seen.update(_ballot_choices(sealer(noise, "v", "a")[1]))
    seen["a"] -= envelopes  # the real ballots (no randomized response)
    fakes = 3 * envelopes
    for choice, weight in {"a": 0.1, "b": 0.3, "c": 0.6}.items():
        spread = 5 * math.sqrt(fakes * weight * (1 - weight))
        assert abs(seen[choice] - fakes * weight) < spread, seen


@seeded_sealers
@pytest.mark.parametrize("probability", [0.3, 0.8])
def test_randomized_response_replaces_with_its_probability(
    make_sealer: Callable[[], Sealer], probability: float
) -> None:
    # One ballot only, so it is the real one: it keeps the choice with probability 1 - p,
    # and is replaced by a uniform choice of the three (perhaps the same) with probability p.
    poll = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["a", "b", "c"],
            "noise": {
                "fakeVotes": {"distribution": "fixed", "count": 0, "min": 0},
                "randomizedResponse": {"probability": probability},
            },
        }
    )
    noise, sealer = NoiseDraws(poll), make_sealer()
    draws = 9000
    seen = Counter(_ballot_choices(sealer(noise, "v", "a")[1])[0] for _ in range(draws))
    expected = {"a": 1 - probability + probability / 3, "b": probability / 3}
    expected["c"] = expected["b"]
    for choice, p in expected.items():
        spread = 5 * math.sqrt(draws * p * (1 - p))
        assert abs(seen[choice] - draws * p) < spread, seen


@sealers
def test_ids_are_not_ordered_either_way(sealer: Sealer) -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    noise = NoiseDraws(poll)
    ids = [
        uuid.UUID(b["id"])
        for _ in range(200)
        for b in envelope.read(sealer(noise, "v", "a")[1])["ballots"]
    ]
    ascending = sum(x.int < y.int for x, y in itertools.pairwise(ids))
    assert 0.35 < ascending / (len(ids) - 1) < 0.65
    assert len(set(ids)) == len(ids)


def test_seal_bytes_reads_the_csprng_once(monkeypatch: pytest.MonkeyPatch) -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b", "c"]})
    noise = NoiseDraws(poll)
    reads: list[int] = []
    urandom = os.urandom

    def counted(size: int) -> bytes:
        reads.append(size)
        return urandom(size)

    monkeypatch.setattr(os, "urandom", counted)
    envelopes = 2000
    for _ in range(envelopes):
        seal_bytes(noise, "v", "a")
    # A second read only when K is above its 99.9% quantile (or a 1-in-2**60 rejection).
    assert envelopes <= len(reads) < envelopes * 1.01, len(reads)


def test_a_large_k_reads_the_csprng_again() -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    noise = NoiseDraws(poll)
    noise.likely_count = 0  # every envelope needs more than the first read
    counts = Counter(len(_ballot_choices(seal_bytes(noise, "v", "a")[1])) - 1 for _ in range(2000))
    assert min(counts) >= 1
    assert math.isclose(statistics.fmean(counts.elements()), 2.0, rel_tol=0.08)


def test_every_draw_comes_from_the_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the CSPRNG stuck at zeros the envelope is fully determined: nothing else (a seeded
    # PRNG, the time, a counter) goes into it.
    poll = PollRules.model_validate(
        {"title": "t", "choices": ["a", "b"], "noise": {"randomizedResponse": {"epsilon": 1}}}
    )
    noise = NoiseDraws(poll)
    monkeypatch.setattr(os, "urandom", lambda size: bytes(size))
    first = seal_bytes(noise, "v", "b")
    assert all(seal_bytes(noise, "v", "b") == first for _ in range(20))
    zero = "00000000-0000-4000-8000-000000000000"
    assert first[0] == zero
    # K = 1 + Poisson(1) at u = 0 is 1; the coin 0 < p replaces "b" by choices[0].
    assert json.loads(first[1]) == {
        "id": zero,
        "actor": {"entry": zero, "voter": "v"},
        "ballots": [{"id": zero, "choice": "a"}, {"id": zero, "choice": "a"}],
    }


def test_seal_bytes_from_many_threads_at_once() -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b", "c"]})
    noise = NoiseDraws(poll)

    def work(voter: str) -> list[tuple[str, bytes]]:
        return [seal_bytes(noise, voter, "b") for _ in range(500)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, [f"voter-{i}" for i in range(8)]))
    ids: list[str] = []
    for i, batch in enumerate(results):
        for sealed_id, sealed in batch:
            read = envelope.read(sealed)
            assert read["id"] == sealed_id
            assert read["actor"]["voter"] == f"voter-{i}"
            ids += [sealed_id, read["actor"]["entry"], *(b["id"] for b in read["ballots"])]
    assert len(set(ids)) == len(ids)


def test_every_draw_takes_its_own_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The layout of the one read (envelope.py): K, the coin, its pick, a word for each fake, one
    # for each step of the shuffle, then the ids. A draw that reused another's word would be
    # almost independent of it, invisible to the statistics above; it shows here.
    poll = PollRules.model_validate(
        {
            "title": "t",
            "choices": ["a", "b", "c"],
            "noise": {
                "fakeVotes": {"distribution": "fixed", "count": 2},
                "randomizedResponse": {"probability": 0.5},
            },
        }
    )
    half = 1 << 63
    words = [7, 0, 2, 0, half, 0, 1]  # K; replace, by c; fakes a, b; shuffle [c, a, b]
    ids = bytes(range(5 * 16))
    read = array("Q", words).tobytes() + ids
    monkeypatch.setattr(os, "urandom", lambda size: read[:size])
    sealed_id, sealed = seal_bytes(NoiseDraws(poll), "v", "a")
    texts = [str(uuid.UUID(bytes=ids[i : i + 16], version=4)) for i in range(0, 80, 16)]
    assert sealed_id == texts[0]
    assert json.loads(sealed) == {
        "id": texts[0],
        "actor": {"entry": texts[1], "voter": "v"},
        # Fisher-Yates: slot 2 swaps with slot 0 (0 % 3), slot 1 stays (1 % 2).
        "ballots": [{"id": i, "choice": c} for i, c in zip(texts[2:], "bac", strict=True)],
    }
