"""The one source of randomness for everything that touches a vote.

Every id, every fake ballot, every shuffle and every randomized-response coin comes from the
operating system's CSPRNG (invariant 4 of docs/design.md). Pure functions take an optional
``random.Random`` so that tests and simulations can be reproducible; production code never
passes one.
"""

from __future__ import annotations

import binascii
import os
import random
import secrets
import uuid
from array import array
from collections.abc import MutableSequence, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

system: random.Random = secrets.SystemRandom()

# Many draws from one read of the CSPRNG: uniform 64-bit words, and what each draw needs of them.
WORD = 1 << 64
_UNIT = 2.0**-53
# Hex digit -> the variant digit of a uuid4: the bits 10 over the two low random bits.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def new_id() -> uuid.UUID:
    """A uuid4 from the OS CSPRNG: no time, no counter, nothing ordered."""
    return uuid.UUID(bytes=os.urandom(16), version=4)


# The version digit of a re-mixed row's id (RFC 9562's version 8: bits of our own choosing).
REMIXED_VERSION: Final = 8


def new_remixed_id() -> uuid.UUID:
    """The id of a row the re-mixer rewrote: 122 random bits from the OS CSPRNG, as many as
    ``new_id``'s, marked version 8 instead of 4. Every row of a poll carries the mark once
    its re-mix is done, so the mark says nothing of any one row; while a re-mix runs in
    chunks it tells the rows still to do from those done (docs/privacy.md)."""
    value = int.from_bytes(os.urandom(16))
    value &= ~(0xF << 76) & ~(0x3 << 62)
    value |= REMIXED_VERSION << 76 | 0x2 << 62
    return uuid.UUID(int=value)


def unit(word: int) -> float:
    """A uniform float in [0, 1) from a uniform 64-bit word, distributed as ``random()`` of
    ``random.Random`` and ``SystemRandom`` (a uniform multiple of 2**-53: its top 53 bits)."""
    return (word >> 11) * _UNIT


def below(word: int, n: int) -> int:
    """A uniform integer in [0, n) from a uniform 64-bit word, as ``randrange(n)`` draws it.

    ``word % n`` alone would favour the small values a little; a word in the incomplete last
    block of n values (a chance below n / 2**64) is replaced by a fresh one from the CSPRNG.
    """
    limit = WORD - WORD % n
    while word >= limit:
        word = int.from_bytes(os.urandom(8))
    return word % n


def id_texts(data: bytes) -> list[str]:
    """The uuid4 of every 16 bytes of ``data`` (from the CSPRNG), as ``str(new_id())`` writes
    it: lowercase, hyphenated, version 4, variant bits 10; 122 random bits each.

    The same text as ``uuid.UUID(bytes=..., version=4)`` gives, with a few whole-buffer
    operations instead of five slices an id.
    """
    count = len(data) // 16
    if count == 0:
        return []
    # Groups of 4 hex digits: 40 characters an id (the last 39), the digit of the version at
    # 15, of the variant at 20, the hyphens to drop at 4, 29 and 34, the one between ids at 39.
    text = bytearray(binascii.hexlify(data[: 16 * count], "-", 2))
    text[15::40] = b"4" * count
    text[20::40] = text[20::40].translate(_VARIANT)
    text[39::40] = b"," * (count - 1)
    # Deleting one character an id moves id k back by k: the stride goes 40, 39, 38.
    del text[34::40]
    del text[29::39]
    del text[4::38]
    return text.decode().split(",")


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


def shuffle_from(items: MutableSequence[T], words: Sequence[int]) -> None:
    """``random.Random.shuffle`` (Fisher-Yates), in place, its ``len(items) - 1`` draws taken
    from as many uniform 64-bit words: every order equally likely."""
    last = len(items) - 1
    if len(words) < last:
        raise ValueError(f"{len(items)} items need {last} words, not {len(words)}")
    for step, i in enumerate(range(last, 0, -1)):
        j = below(words[step], i + 1)
        items[i], items[j] = items[j], items[i]


def token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
