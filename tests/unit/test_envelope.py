"""Nothing in an envelope tells which ballot is the real one."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from privpoll import envelope
from privpoll.envelope import Envelope, seal
from privpoll.noise import Noise
from privpoll.spec import PollRules

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
    envelope = seal(Noise(poll), voter, choice)
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


def test_real_ballot_position_is_uniform() -> None:
    # Fakes are (almost) never "real", so the test can find the real ballot; the envelope
    # itself must not: its position has to be uniform over the 1 + K slots.
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
    noise = Noise(poll)
    rng = random.Random(7)
    positions = Counter(
        [b.choice for b in seal(noise, "v", "real", rng).ballots].index("real") for _ in range(8000)
    )
    assert set(positions) == {0, 1, 2, 3}
    for count in positions.values():
        assert 1800 < count < 2200, positions


def test_ids_are_not_ordered() -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    ids = [b.id for _ in range(200) for b in seal(Noise(poll), "v", "a").ballots]
    ascending = sum(x.int < y.int for x, y in itertools.pairwise(ids))
    assert 0.35 < ascending / (len(ids) - 1) < 0.65


@settings(max_examples=100, deadline=None)
@given(poll=polls(), voter=labels, data=st.data())
def test_a_sink_reads_what_the_ingest_sealed(
    poll: PollRules, voter: str, data: st.DataObject
) -> None:
    sealed = seal(Noise(poll), voter, data.draw(st.sampled_from(poll.choices)))
    read = envelope.read(sealed.encode())
    assert read["id"] == str(sealed.id)
    assert read["actor"] == {"entry": str(sealed.actor.entry), "voter": voter}
    assert read["ballots"] == [{"id": str(b.id), "choice": b.choice} for b in sealed.ballots]


def test_a_sink_refuses_what_is_no_envelope() -> None:
    poll = PollRules.model_validate({"title": "t", "choices": ["a", "b"]})
    good = json.loads(seal(Noise(poll), "v", "a").encode())
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
