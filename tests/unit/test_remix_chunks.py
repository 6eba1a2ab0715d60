"""The re-mix's chunks (privpoll.db.remix): each a uniformly random subset of the rows."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privpoll.core import randomness
from privpoll.db.remix import chunk_of, id_ranges


@given(st.integers(min_value=1, max_value=500))
def test_the_ranges_tile_the_uuid_space(chunks: int) -> None:
    ranges = id_ranges(chunks)
    assert len(ranges) == chunks
    assert ranges[0][0].int == 0
    assert ranges[-1][1].int == (1 << 128) - 1
    for (_, high), (low, _) in itertools.pairwise(ranges):
        assert low.int == high.int + 1
    for j, (low, high) in enumerate(ranges):
        assert chunk_of(low, chunks) == j
        assert chunk_of(high, chunks) == j


def test_there_is_at_least_one_chunk() -> None:
    with pytest.raises(ValueError, match="chunks must be at least 1, not 0"):
        id_ranges(0)


def test_chunk_membership_does_not_depend_on_the_order_of_arrival() -> None:
    ids = [randomness.new_id() for _ in range(5_000)]
    arrived = list(ids)
    random.Random(7).shuffle(arrived)
    by_arrival: dict[uuid.UUID, int] = {key: chunk_of(key, 10) for key in arrived}
    assert by_arrival == {key: chunk_of(key, 10) for key in ids}
    # The first and the last to arrive spread over the chunks alike: no chunk is a batch.
    first = [by_arrival[key] for key in ids[:2_500]]
    last = [by_arrival[key] for key in ids[2_500:]]
    for j in range(10):
        assert abs(first.count(j) - last.count(j)) < 120


def test_chunks_of_random_ids_hold_about_as_many_rows_each() -> None:
    chunks = 8
    counts = [0] * chunks
    for _ in range(40_000):
        counts[chunk_of(randomness.new_id(), chunks)] += 1
    # 5,000 expected each, sd about 66: eight sds either side.
    assert all(abs(count - 5_000) < 530 for count in counts), counts


def test_a_remixed_id_has_as_many_random_bits_as_a_new_one() -> None:
    ids = [randomness.new_remixed_id() for _ in range(2_000)]
    assert all(key.version == randomness.REMIXED_VERSION for key in ids)
    assert all(key.variant == uuid.RFC_4122 for key in ids)
    assert len(set(ids)) == len(ids)
    # Every one of the 122 random bits takes both values.
    fixed = (0xF << 76) | (0x3 << 62)
    seen_one = 0
    seen_zero = 0
    for key in ids:
        seen_one |= key.int
        seen_zero |= ~key.int
    assert (seen_one & seen_zero & ~fixed) == ((1 << 128) - 1) & ~fixed
