"""Envelopes: one vote, its voter, and its real ballot hidden among fake ones."""

from __future__ import annotations

import json
import os
import random
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter
from typing_extensions import TypedDict

from privpoll.core import randomness
from privpoll.core.noise import NoiseDraws


class Actor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    entry: uuid.UUID
    voter: str


class Ballot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: uuid.UUID
    choice: str


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: uuid.UUID
    actor: Actor
    ballots: list[Ballot]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        return cls.model_validate_json(data)


# How a sink reads an envelope: the same fields, checked as strictly, into plain dicts with the
# ids kept as the text the ingest wrote (lowercase, hyphenated, as ``encode`` writes uuids).
# A sink reads thousands a second; this is about half the CPU of building the models.
ID_TEXT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Id = Annotated[str, StringConstraints(pattern=ID_TEXT)]


class ReadActor(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    entry: Id
    voter: str


class ReadBallot(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    id: Id
    choice: str


class ReadEnvelope(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    id: Id
    actor: ReadActor
    ballots: list[ReadBallot]


_READER: TypeAdapter[ReadEnvelope] = TypeAdapter(ReadEnvelope)


def read(data: bytes) -> ReadEnvelope:
    """An envelope as a sink stores it; raises pydantic's ``ValidationError`` for anything
    ``Envelope.decode`` would refuse (or an id not written the way ``encode`` writes one)."""
    return _READER.validate_json(data)


def seal(noise: NoiseDraws, voter: str, choice: str, rng: random.Random | None = None) -> Envelope:
    """Build the envelope for one vote: 1 + K ballots in random order, every id random.

    Nothing in the result tells which ballot is real: all ballots have the same fields, their
    ids are independent uuid4s, and their order is a uniform shuffle.
    """
    choices = [noise.reported(choice, rng), *noise.fakes(rng)]
    randomness.shuffle(choices, rng)
    ballots = [Ballot(id=_id(rng), choice=c) for c in choices]
    return Envelope(id=_id(rng), actor=Actor(entry=_id(rng), voter=voter), ballots=ballots)


def _id(rng: random.Random | None) -> uuid.UUID:
    if rng is None:
        return randomness.new_id()
    return uuid.UUID(int=rng.getrandbits(128), version=4)


# How ``seal_bytes`` lays out its one read of the CSPRNG, for K fake ballots: three words (K,
# the randomized-response coin and its pick), K words for the fakes, K for the shuffle of the
# 1 + K ballots, then 16 bytes for each of the K + 3 ids (envelope, actor entry, ballots).
def _read_size(fakes: int) -> int:
    return 8 * (3 + 2 * fakes) + 16 * (fakes + 3)


_JSON = json.JSONEncoder(ensure_ascii=False)


def seal_bytes(noise: NoiseDraws, voter: str, choice: str) -> tuple[str, bytes]:
    """What ``seal(noise, voter, choice)`` means, as its id (``str(envelope.id)``) and its
    ``encode()``: the bytes ``Envelope.model_dump_json`` writes for such an envelope.

    Every draw has the distribution ``seal`` gives it (``NoiseDraws.*_from`` mirror ``NoiseDraws``'s
    draws, ``randomness.shuffle_from`` ``random.Random.shuffle``), all taken from ONE read of
    the OS CSPRNG (a second only when K is above ``noise.likely_count``): no pydantic model,
    no ``uuid.UUID``, no system call per draw. Nothing is shared between calls: thread-safe.
    A voter that is no valid text (a lone surrogate) raises ``UnicodeEncodeError``, a
    ``ValueError`` as ``encode`` raises one.
    """
    size = _read_size(noise.likely_count)
    data = os.urandom(size)
    words = memoryview(data).cast("Q")
    fakes = noise.count_from(words[0])
    need = _read_size(fakes)
    if need > size:
        data += os.urandom(need - size)
        words = memoryview(data).cast("Q")
    choices = [
        noise.reported_from(choice, words[1], words[2]),
        *noise.fakes_from(words[3 : 3 + fakes]),
    ]
    randomness.shuffle_from(choices, words[3 + fakes : 3 + 2 * fakes])
    ids = randomness.id_texts(data[8 * (3 + 2 * fakes) : need])
    known = noise.json_choices
    ballots = ",".join(
        [
            f'{{"id":"{ballot}","choice":{known.get(c) or _JSON.encode(c)}}}'
            for ballot, c in zip(ids[2:], choices, strict=True)
        ]
    )
    text = (
        f'{{"id":"{ids[0]}","actor":{{"entry":"{ids[1]}","voter":{_JSON.encode(voter)}}},'
        f'"ballots":[{ballots}]}}'
    )
    return ids[0], text.encode()
