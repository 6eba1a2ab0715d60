"""What a poll's sink consumers have to do, as the operator's scaler reads it: how many
envelopes wait undelivered, how many a sink holds unacknowledged (the mixing rule's hold-back
among them), and a mark that moves whenever anything is published, delivered or acked."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from privpoll.bus import naming


@dataclass(frozen=True)
class ConsumerActivity:
    pending: int  # in the stream, never delivered to this sink
    held: int  # delivered, not acknowledged yet (held back for mixing, or in flight)
    # (last published, last delivered, ack floor): moves with any work at all.
    mark: tuple[int, int, int]


@dataclass(frozen=True)
class StreamActivity:
    taking_votes: bool
    consumers: dict[naming.Role, ConsumerActivity]


async def activity(js: JetStreamContext, name: str) -> StreamActivity | None:
    """The poll's stream and its sink consumers now; None when the stream is gone."""
    stream = naming.stream(name)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    last = int(info.state.last_seq or 0)
    consumers: dict[naming.Role, ConsumerActivity] = {}
    for role in naming.ROLES:
        try:
            consumer = await js.consumer_info(stream, naming.consumer(role))
        except NotFoundError:
            continue
        delivered = int(consumer.delivered.stream_seq or 0) if consumer.delivered else 0
        floor = int(consumer.ack_floor.stream_seq or 0) if consumer.ack_floor else 0
        consumers[role] = ConsumerActivity(
            pending=int(consumer.num_pending or 0),
            held=int(consumer.num_ack_pending or 0),
            mark=(last, delivered, floor),
        )
    taking = naming.subject(name) in (info.config.subjects or [])
    return StreamActivity(taking_votes=taking, consumers=consumers)
