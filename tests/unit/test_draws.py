"""Draws from words of the CSPRNG: each distributed as its twin drawn from a random.Random."""

from __future__ import annotations

import itertools
import math
import os
import random
import uuid
from bisect import bisect_left
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privpoll.core import randomness
from privpoll.core.noise import NoiseDraws, _poisson, _poisson_table, fake_count
from privpoll.core.spec import FakeVotes, PollRules

words = st.integers(min_value=0, max_value=randomness.WORD - 1)


def kept(word: int, n: int) -> bool:
    """Whether ``below(word, n)`` keeps the word (it is ``word % n`` then, not a fresh draw)."""
    return word < randomness.WORD - randomness.WORD % n


class Scripted(random.Random):
    """A ``random.Random`` whose ``random()`` returns the given floats, in turn."""

    def __init__(self, floats: list[float]) -> None:
        super().__init__(0)
        self.floats = list(floats)

    def random(self) -> float:
        return self.floats.pop(0)


def test_ids_are_the_text_of_uuid4() -> None:
    for data in [bytes(16), b"\xff" * 16, *(os.urandom(16 * n) for n in range(40))]:
        expected = [
            str(uuid.UUID(bytes=data[i : i + 16], version=4)) for i in range(0, len(data), 16)
        ]
        assert randomness.id_texts(data) == expected


@given(data=st.binary(min_size=16, max_size=16 * 8))
def test_ids_of_any_bytes(data: bytes) -> None:
    whole = data[: len(data) // 16 * 16]
    expected = [
        str(uuid.UUID(bytes=whole[i : i + 16], version=4)) for i in range(0, len(whole), 16)
    ]
    assert randomness.id_texts(data) == expected


def test_every_random_bit_of_an_id_is_used() -> None:
    # 122 bits vary: over many ids each of the 30 free hex digits takes all 16 values, the
    # variant digit its 4.
    ids = randomness.id_texts(os.urandom(16 * 2000))
    digits = [set(column) for column in zip(*(i.replace("-", "") for i in ids), strict=True)]
    assert digits[12] == {"4"}
    assert digits[16] == set("89ab")
    assert all(len(d) == 16 for n, d in enumerate(digits) if n not in (12, 16))


@given(word=words)
def test_unit_is_random_of_the_top_53_bits(word: int) -> None:
    value = randomness.unit(word)
    assert 0.0 <= value < 1.0
    assert value * 2**53 == word >> 11
    assert randomness.unit(0) == 0.0
    assert randomness.unit(randomness.WORD - 1) == 1.0 - 2.0**-53


@given(word=words, n=st.integers(min_value=1, max_value=10**6))
def test_below_is_the_word_modulo_n_when_it_is_not_refused(word: int, n: int) -> None:
    if kept(word, n):
        assert randomness.below(word, n) == word % n
    else:
        assert 0 <= randomness.below(word, n) < n


def test_below_draws_again_in_the_incomplete_last_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2**64 = 1 (mod 3): the top word would make 0 a little likelier; it is drawn again.
    draws = iter([(randomness.WORD - 1).to_bytes(8), (5).to_bytes(8)])
    monkeypatch.setattr(os, "urandom", lambda size: next(draws))
    assert randomness.below(randomness.WORD - 1, 3) == 2
    assert randomness.below(randomness.WORD - 2, 3) == (randomness.WORD - 2) % 3
    assert randomness.below(randomness.WORD - 1, 4) == 3  # a power of two: never refused


def test_shuffle_from_gives_every_order_of_four_equally() -> None:
    draws = 24_000
    seen: Counter[tuple[int, ...]] = Counter()
    for _ in range(draws):
        items = [0, 1, 2, 3]
        data = os.urandom(24)
        randomness.shuffle_from(items, memoryview(data).cast("Q"))
        seen[tuple(items)] += 1
    assert set(seen) == set(itertools.permutations(range(4)))
    # 1,000 expected each; a standard deviation is about 31.
    for count in seen.values():
        assert 840 < count < 1160, seen


def test_shuffle_from_needs_a_word_a_step() -> None:
    with pytest.raises(ValueError, match="need 2 words"):
        randomness.shuffle_from([1, 2, 3], [5])
    items = [1]
    randomness.shuffle_from(items, [])
    assert items == [1]


@pytest.mark.parametrize("mean", [0.1, 0.5, 1.0, 2.0, 7.25, 99.0, 100.0])
def test_poisson_table_is_the_loop_of_poisson(mean: float) -> None:
    table = _poisson_table(mean)
    assert table == sorted(table)
    # At, just below and just above every cumulative sum, and anywhere: the same count.
    points = [u for c in table for u in (c, math.nextafter(c, 0), math.nextafter(c, 1))]
    points += [random.random() for _ in range(2000)] + [0.0, 1.0 - 2.0**-53]
    for u in points:
        u = min(max(u, 0.0), 1.0 - 2.0**-53)
        assert bisect_left(table, u, 0, len(table) - 1) == _poisson(mean, Scripted([u])), u


def _noise(fake_votes: dict[str, object], **noise: object) -> NoiseDraws:
    return NoiseDraws(
        PollRules.model_validate(
            {
                "title": "t",
                "choices": ["a", "b", "c"],
                "noise": {"fakeVotes": fake_votes, **noise},
            }
        )
    )


@pytest.mark.parametrize(
    "fake_votes",
    [
        {"distribution": "fixed", "count": 4},
        {"distribution": "poisson", "mean": 2, "min": 1},
        {"distribution": "poisson", "mean": 3, "min": 3},
        {"distribution": "poisson", "mean": 100, "min": 0},
        {"distribution": "uniform", "min": 2, "max": 7},
    ],
)
@settings(max_examples=300)
@given(word=words)
def test_count_from_is_fake_count(fake_votes: dict[str, object], word: int) -> None:
    noise = _noise(fake_votes, randomizedResponse={"probability": 0.5})
    spec = FakeVotes.model_validate(fake_votes)
    if spec.distribution == "uniform":
        assert spec.max is not None
        span = spec.max - spec.min + 1
        count = noise.count_from(word)
        assert spec.min <= count <= spec.max
        if kept(word, span):
            assert count == spec.min + word % span
    else:
        assert noise.count_from(word) == fake_count(spec, Scripted([randomness.unit(word)]))


def test_likely_count_is_rarely_exceeded() -> None:
    noise = _noise({"distribution": "poisson", "mean": 2, "min": 1})
    assert noise.likely_count == 6  # 1 + the 99.9% quantile of Poisson(1), which is 5
    assert _noise({"distribution": "uniform", "min": 2, "max": 7}).likely_count == 7
    assert _noise({"distribution": "fixed", "count": 4}).likely_count == 4


@given(data=st.lists(words, max_size=20))
def test_fakes_from_is_choices_with_the_weights(data: list[int]) -> None:
    noise = _noise(
        {"distribution": "fixed", "count": 3}, choiceWeights={"a": 0.1, "b": 2, "c": 7.9}
    )
    rng = Scripted([randomness.unit(w) for w in data])
    assert noise.fakes_from(data) == rng.choices(noise.choices, weights=noise.weights, k=len(data))


@given(coin=words, pick=words)
def test_reported_from_is_randomized_response(coin: int, pick: int) -> None:
    noise = _noise({"distribution": "fixed", "count": 3}, randomizedResponse={"probability": 0.3})
    if randomness.unit(coin) < 0.3:
        reported = noise.reported_from("b", coin, pick)
        assert reported in noise.choices
        if kept(pick, 3):
            assert reported == noise.choices[pick % 3]
    else:
        assert noise.reported_from("b", coin, pick) == "b"
    plain = _noise({"distribution": "fixed", "count": 3})
    assert plain.reported_from("b", coin, pick) == "b"


def test_json_choices_escape_every_choice() -> None:
    noise = NoiseDraws(PollRules.model_validate({"title": "t", "choices": ['"q"', "a\\b", "é"]}))
    assert noise.json_choices == {'"q"': '"\\"q\\""', "a\\b": '"a\\\\b"', "é": '"é"'}
