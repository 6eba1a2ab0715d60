"""The one source of randomness for everything that touches a vote.

Every id, every fake ballot, every shuffle and every randomized-response coin comes from the
operating system's CSPRNG (invariant 4 of DESIGN.md). Pure functions take an optional
``random.Random`` so that tests and simulations can be reproducible; production code never
passes one.
"""

from __future__ import annotations

import os
import random
import secrets
import uuid
from array import array
from collections.abc import MutableSequence
from typing import TypeVar

T = TypeVar("T")

system: random.Random = secrets.SystemRandom()


def new_id() -> uuid.UUID:
    """A uuid4 from the OS CSPRNG: no time, no counter, nothing ordered."""
    return uuid.UUID(bytes=os.urandom(16), version=4)


def shuffle(items: MutableSequence[T], rng: random.Random | None = None) -> None:
    """A uniform random order, in place.

    Each item gets an independent random 64-bit key from ONE read of the CSPRNG, and the
    items are sorted by key; keys drawn twice are drawn again, so every order is equally
    likely. ``SystemRandom.shuffle`` reads the CSPRNG once per item: a sink's batch of
    thousands of rows paid a system call for each.
    """
    if rng is not None:
        rng.shuffle(items)
        return
    count = len(items)
    while True:
        keys = array("Q", os.urandom(8 * count))
        if len(set(keys)) == count:
            break
    order = sorted(range(count), key=keys.__getitem__)
    items[:] = [items[i] for i in order]


def token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
