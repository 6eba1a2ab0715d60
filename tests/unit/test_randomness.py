"""The CSPRNG shuffle that mixes a batch: every order equally likely, nothing lost."""

from __future__ import annotations

import itertools
import os
from array import array
from collections import Counter

import pytest

from privpoll.core import randomness


def test_every_order_of_three_is_equally_likely() -> None:
    draws = 30_000
    seen: Counter[tuple[int, ...]] = Counter()
    for _ in range(draws):
        items = [0, 1, 2]
        randomness.shuffle(items)
        seen[tuple(items)] += 1
    assert set(seen) == set(itertools.permutations([0, 1, 2]))
    # 5,000 expected each; a standard deviation is about 65.
    for count in seen.values():
        assert 4_600 < count < 5_400, seen


def test_a_batch_keeps_every_row_and_loses_its_order() -> None:
    rows = list(range(10_000))
    shuffled = list(rows)
    randomness.shuffle(shuffled)
    assert sorted(shuffled) == rows
    # A uniform order leaves about one row in place; sorted input would leave them all.
    assert sum(a == b for a, b in zip(rows, shuffled, strict=True)) < 20


def test_keys_drawn_twice_are_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tied keys would leave their items in the order they came: the first draw here ties
    # every key, the second orders them backwards.
    draws = iter([bytes(8) * 3, array("Q", [3, 2, 1]).tobytes()])
    monkeypatch.setattr(os, "urandom", lambda size: next(draws))
    items = ["a", "b", "c"]
    randomness.shuffle(items)
    assert items == ["c", "b", "a"]
