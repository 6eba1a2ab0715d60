"""Envelopes: one vote, its voter, and its real ballot hidden among fake ones."""

from __future__ import annotations

import random
import uuid

from pydantic import BaseModel, ConfigDict

from privpoll import randomness
from privpoll.noise import Noise


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


def seal(noise: Noise, voter: str, choice: str, rng: random.Random | None = None) -> Envelope:
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
