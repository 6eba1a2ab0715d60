"""The mixing rule of a sink (docs/design.md, storage invariant 3), with no I/O.

A sink writes envelopes in batches so that a thief who copies the database between two commits
sees each voter among at least ``minBatch`` others. While the poll is open a sink therefore
always holds the newest ``minBatch`` envelopes back for the next batch: the batch written when
the poll closes is then never smaller than ``minBatch`` either, and the last voters of a poll
are never written alone. A batch may be written once it holds ``2 * minBatch`` envelopes (so
``minBatch`` are written and ``minBatch`` held), after a jittered wait of up to ``maxWait`` for
more, drawn by each sink on its own; a full one (``capacity``) at once; everything once the
poll is closed and its stream drained.
"""

from __future__ import annotations

from dataclasses import dataclass

from privpoll.core.spec import Mixing

# Envelopes a sink holds and writes at most at once: a backlog drains in batches this big
# (docs/benchmarks.md has the measurements behind the figure).
MAX_BATCH = 5000
# The least share of maxWait a ready batch waits for more (the draw is uniform up to 1).
LEAST_WAIT = 0.25


@dataclass(frozen=True)
class MixingRule:
    """Which of the envelopes a sink holds, oldest first, to write now."""

    min_batch: int
    max_wait: float
    capacity: int

    @classmethod
    def of(cls, mixing: Mixing, *, most: int = MAX_BATCH) -> MixingRule:
        return cls(
            mixing.min_batch, mixing.max_wait_seconds, capacity=max(most, 2 * mixing.min_batch)
        )

    def ready_at(self, held: int, now: float, draw: float) -> float | None:
        """When ``held`` envelopes may be written at the earliest (None: not enough yet).
        ``draw`` is a uniform draw in [0, 1) from the sink's own randomness."""
        if held < 2 * self.min_batch:
            return None
        return now + self.max_wait * (LEAST_WAIT + (1 - LEAST_WAIT) * draw)

    def due(self, held: int, ready_at: float | None, now: float, *, drained: bool) -> bool:
        """Whether to write now what ``to_write`` says."""
        if held == 0:
            return False
        if drained or held >= self.capacity:
            return True
        return ready_at is not None and now >= ready_at

    def to_write(self, held: int, *, drained: bool) -> int:
        """How many of the oldest envelopes to write: all once drained, else all but the
        newest ``min_batch``."""
        return held if drained else max(held - self.min_batch, 0)
