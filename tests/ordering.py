"""Is an order on disk independent of the order rows arrived in? A rank correlation says.

Spearman's rho of two orders of the same n items is near 0 when one is a uniform shuffle of
the other: its mean is 0 and its variance exactly 1/(n - 1), and for the n of these tests its
distribution is close to normal. ``INDEPENDENT`` standard deviations (5) bound it: a shuffled
order passes with probability about 1 - 6e-7, while an order kept as it came has rho = 1 and
fails for any n above 26 (a batch mostly kept in order fails too, a little later).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

INDEPENDENT = 5.0


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given the mean of the ranks they share."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    found = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            found[i] = (start + end) / 2 + 1
        start = end + 1
    return found


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's correlation of the ranks (0 when either side is constant)."""
    assert len(xs) == len(ys)
    assert len(xs) > 1
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return 0.0 if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def bound(n: int) -> float:
    """The largest |rho| a uniform shuffle of n items shows, but for odds of about 6e-7."""
    return INDEPENDENT / math.sqrt(n - 1)


def disk_order_of(stream_rank: Sequence[float]) -> tuple[float, float]:
    """(rho, bound) of rows listed in their order on disk, each given its rank in the
    order they arrived."""
    n = len(stream_rank)
    return spearman(list(range(n)), stream_rank), bound(n)


def pooled(groups: Sequence[Sequence[float]]) -> float:
    """Several batches, each shuffled on its own, as one statistic: the sum of
    rho_b * sqrt(n_b - 1) (each of variance 1) over sqrt(batches) has variance 1 too, so
    ``INDEPENDENT`` bounds it as it bounds one batch's rho * sqrt(n - 1). Each group lists a
    batch's rows in their order on disk, each given its rank in the order they arrived."""
    used = [g for g in groups if len(g) > 2]
    assert used, "no batch of more than two rows"
    total = sum(disk_order_of(g)[0] * math.sqrt(len(g) - 1) for g in used)
    return total / math.sqrt(len(used))
