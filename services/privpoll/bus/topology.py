"""A poll's place in NATS: its stream, consumers, voters bucket and registry entry. Idempotent.

The steps of a poll's life that use them are in ``privpoll.service.lifecycle``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from privpoll.bus import naming
from privpoll.core.poll import Poll

log = logging.getLogger(__name__)

# The JetStream API handle, as the layers above NATS name it.
JetStream = JetStreamContext

DEDUP_WINDOW = 120.0
# How long a sink may hold a message before JetStream redelivers it; sinks send in-progress
# acks well within it while a batch waits for enough envelopes to mix.
ACK_WAIT = 30.0
MAX_ACK_PENDING = 50_000


def stream_config(poll: Poll, *, replicas: int = 1) -> api.StreamConfig:
    subject = naming.subject(poll.name) if not poll.closed else naming.closed(poll.name)
    return api.StreamConfig(
        name=naming.stream(poll.name),
        subjects=[subject],
        retention=api.RetentionPolicy.INTEREST,
        storage=api.StorageType.FILE,
        duplicate_window=DEDUP_WINDOW,
        num_replicas=replicas,
        max_msg_size=1 << 20,
    )


def consumer_config(role: naming.Role) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=naming.consumer(role),
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=ACK_WAIT,
        max_ack_pending=MAX_ACK_PENDING,
        max_waiting=512,
    )


async def registry_bucket(js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
    try:
        return await js.key_value(naming.REGISTRY_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            bucket=naming.REGISTRY_BUCKET, history=1, replicas=replicas
        )


LISTING_TIMEOUT = 5.0


async def live_keys(js: JetStreamContext, name: str, bucket: KeyValue) -> list[str]:
    """The keys of the KV bucket ``name`` that hold a value (deleted and purged ones left out).

    Not nats-py's ``keys()``: it ends a listing at a marker it places when a consumer-info
    answer says nothing is pending and nothing has arrived yet, but the deliveries that
    answer counts may still be on their way, and then the listing is empty. (A poll page
    once read "0 of 5 voters have voted" right after four votes, in CI; this race is the
    likely cause, not a proven one.) This one reads until a delivered key says nothing is
    left after it.
    """
    info = await js.stream_info(naming.bucket_stream(name))
    if not info.state.messages:
        return []
    watcher = await bucket.watchall(meta_only=True)
    live: dict[str, bool] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=LISTING_TIMEOUT)  # type: ignore[no-untyped-call]
            if entry is None:  # nats-py's own end marker, which may come early
                continue
            live[entry.key] = entry.operation is None
            if not entry.delta:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return [key for key, has_value in live.items() if has_value]


async def provision_queue(js: JetStreamContext, poll: Poll, *, replicas: int = 1) -> None:
    """Stream, both durable consumers, the voters bucket and the registry entry.

    Closing is one-way: a caller holding a copy of the poll from before a concurrent close
    (the operator's update handler racing its timer) must not reopen the stream.
    """
    try:
        info = await js.stream_info(naming.stream(poll.name))
        if not poll.closed and (info.config.subjects or []) == [naming.closed(poll.name)]:
            poll = poll.model_copy(update={"closed": True})
        await js.update_stream(stream_config(poll, replicas=replicas))
    except NotFoundError:
        await js.add_stream(stream_config(poll, replicas=replicas))
    # Consumers before any vote: with Interest retention a message nobody is interested in
    # is dropped at once.
    for role in naming.ROLES:
        await js.add_consumer(naming.stream(poll.name), consumer_config(role))
    if poll.rules.duplicates == "prevent":
        try:
            await js.key_value(naming.voters_bucket(poll.name))
        except BucketNotFoundError:
            await js.create_key_value(
                bucket=naming.voters_bucket(poll.name), history=1, replicas=replicas
            )
    await register(js, poll, replicas=replicas)


async def register(js: JetStreamContext, poll: Poll, *, replicas: int = 1) -> None:
    """The poll's registry entry alone (a re-mixed poll keeps it until it is purged)."""
    await (await registry_bucket(js, replicas=replicas)).put(poll.name, poll.to_registry())


async def remove_votes(js: JetStreamContext, name: str) -> None:
    """Delete the poll's stream and voters bucket, all the queue ever held of its votes
    (missing ones are fine); ``remove_queue`` removes the registry entry after them."""
    for remove in (
        js.delete_stream(naming.stream(name)),
        js.delete_key_value(naming.voters_bucket(name)),
    ):
        with contextlib.suppress(NotFoundError):
            await remove


async def unregister(js: JetStreamContext, name: str) -> None:
    """Remove the poll's registry entry without a trace: the purge marker that tells every
    cache the entry is gone (it moves the bucket's last sequence) is itself erased after, so
    the registry keeps nothing of the poll, not even its name (missing entries are fine)."""
    with contextlib.suppress(KeyNotFoundError):
        await (await registry_bucket(js)).purge(name)
    with contextlib.suppress(NotFoundError):
        await js.purge_stream(
            naming.registry_stream(), subject=f"$KV.{naming.REGISTRY_BUCKET}.{name}"
        )


async def remove_queue(js: JetStreamContext, name: str) -> None:
    """Delete the poll's stream, voters bucket and registry entry (missing ones are fine)."""
    await remove_votes(js, name)
    await unregister(js, name)


async def envelopes_published(js: JetStreamContext, name: str) -> int:
    """How many votes ever entered the poll's stream, stored by the sinks yet or not."""
    try:
        info = await js.stream_info(naming.stream(name))
    except NotFoundError:
        return 0
    return int(info.state.last_seq or 0)


@dataclass(frozen=True)
class Drain:
    """How far the sinks are with a poll's stream."""

    taking_votes: bool
    held: int

    @property
    def done(self) -> bool:
        return not self.taking_votes and self.held == 0


async def drain(js: JetStreamContext, name: str) -> Drain:
    """Whether the stream still takes votes, and how many envelopes a sink has not yet
    committed and acked (pending or unacked, whichever sink is further behind)."""
    try:
        info = await js.stream_info(naming.stream(name))
    except NotFoundError:
        return Drain(taking_votes=False, held=0)
    taking = naming.subject(name) in (info.config.subjects or [])
    held = 0
    for role in naming.ROLES:
        try:
            consumer = await js.consumer_info(naming.stream(name), naming.consumer(role))
        except NotFoundError:
            continue
        held = max(held, int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0))
    return Drain(taking_votes=taking, held=held)


async def stored_by(js: JetStreamContext, name: str, role: naming.Role) -> bool:
    """The stream takes no more votes and holds nothing for ``role``'s sink: nothing
    pending, nothing delivered and unacked (a lost ack would come back as a redelivery).
    A stream that is gone holds nothing: the purge deleted it (or the poll was deleted)."""
    stream = naming.stream(name)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return True
    consumer = await js.consumer_info(stream, naming.consumer(role))
    taking = naming.subject(name) in (info.config.subjects or [])
    return not taking and not consumer.num_pending and not consumer.num_ack_pending


async def drained(js: JetStreamContext, name: str) -> bool:
    """No vote can enter any more and both sinks hold nothing: nothing pending, nothing
    unacked. Only then may the re-mixer rewrite the poll's rows."""
    return (await drain(js, name)).done


async def read_poll(bucket: KeyValue, name: str) -> Poll | None:
    """The poll's registry entry (None: no poll of that name is registered)."""
    try:
        entry = await bucket.get(name)
    except KeyNotFoundError:
        return None
    return Poll.from_registry(entry.value) if entry.value else None
