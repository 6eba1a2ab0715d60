"""Idle sinks cost nothing: a poll's sink Deployment at zero replicas while its consumer has
nothing to do, back at one as soon as an envelope waits. Pure: the timer in ``handlers``
reads the consumers (``privpoll.bus.activity``) and scales the Deployments.

A sink at zero leaves the envelopes it held back for mixing unacknowledged: JetStream
redelivers them after the ack wait to the next sink that pulls, which mixes them with newer
ones (docs/reliability.md). So a sink may go while it holds envelopes, as long as the poll is
open; once the poll is closed, held envelopes are work: the sink comes back to write them.
"""

from __future__ import annotations

from dataclasses import dataclass

from privpoll.bus.activity import ConsumerActivity


@dataclass(frozen=True)
class Seen:
    """What the scaler last saw of one consumer: its mark, since when, and the replicas it
    last set (None: not set by this operator process yet)."""

    mark: tuple[int, int, int]
    since: float
    replicas: int | None


def step(
    seen: Seen | None,
    now: float,
    consumer: ConsumerActivity,
    *,
    open_poll: bool,
    idle_after: float,
) -> tuple[Seen, int | None]:
    """The next view of the consumer and the replicas to set now (None: leave them)."""
    if seen is None or seen.mark != consumer.mark:
        seen = Seen(consumer.mark, now, seen.replicas if seen else None)
    if consumer.pending or (consumer.held and not open_poll):
        wanted = 1
    elif idle_after > 0 and open_poll and now - seen.since >= idle_after:
        wanted = 0
    else:
        return seen, None
    if wanted == seen.replicas:
        return seen, None
    return Seen(seen.mark, seen.since, wanted), wanted
