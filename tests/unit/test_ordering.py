"""The rank correlation the order-on-disk tests rely on tells shuffled from kept orders."""

from __future__ import annotations

import random

from tests.ordering import INDEPENDENT, bound, disk_order_of, pooled, ranks, spearman


def test_ranks_share_ties() -> None:
    assert ranks([10, 30, 20, 30]) == [1.0, 3.5, 2.0, 3.5]


def test_a_kept_order_fails_and_shuffles_pass() -> None:
    n = 60
    kept = list(range(n))
    assert spearman(kept, kept) == 1.0
    assert spearman(kept, kept[::-1]) == -1.0
    rho, limit = disk_order_of(kept)
    assert rho > limit
    rng = random.Random(29)
    for _ in range(200):
        shuffled = kept[:]
        rng.shuffle(shuffled)
        rho, limit = disk_order_of(shuffled)
        assert abs(rho) < limit
    assert bound(26) == INDEPENDENT / 5


def test_pooled_batches() -> None:
    kept = [list(range(30)), list(range(60))]
    assert pooled(kept) > INDEPENDENT
    rng = random.Random(30)
    batches = [rng.sample(range(40), 40) for _ in range(5)]
    assert abs(pooled(batches)) < INDEPENDENT
