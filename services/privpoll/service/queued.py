"""Votes in flight: answered 202 by the ingest, not yet written to the database by the sinks.

Every accepted vote is one envelope in the poll's stream, whose last sequence counts them
(duplicates dropped by JetStream never get one); every stored vote is one actor row. The
difference is what the sinks still hold, mixing it into a batch.
"""

from __future__ import annotations

from privpoll.bus import topology
from privpoll.bus.ballot_box import QueueDown
from privpoll.core.poll import Poll
from privpoll.service.services import Services


def pending_votes(svc: Services, poll: Poll, stored_votes: int) -> int | None:
    """How many accepted votes are not in the database yet; None if NATS cannot say now."""
    box = svc.box

    async def published() -> int:
        return await topology.envelopes_published(await box.jetstream(), poll.name)

    try:
        accepted = box.call(published())
    except QueueDown:
        return None
    return max(accepted - stored_votes, 0)
