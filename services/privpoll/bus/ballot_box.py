"""The ingest's side of NATS: the reservation of a voter and the casting of one envelope.

Its NATS connection lives on one event loop per worker process (``bus.loop_thread``), to which
every request hands its work: many publishes are in flight at once on one connection. In
gunicorn's gevent worker (the default) the threads are greenlets, the loop's among them: the
loop waits for its sockets through gevent's patched selectors, and a request waiting for its
answer lets the others run, with no thread switch between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import APIError as JetStreamAPIError
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from privpoll.bus import naming, topology, wire
from privpoll.bus.loop_thread import Abandoned, LoopThread
from privpoll.bus.publisher import Publisher, Stored
from privpoll.bus.registry import Registry
from privpoll.core import tokens
from privpoll.core.envelope import seal_bytes
from privpoll.core.noise import NoiseDraws
from privpoll.core.poll import Phase, Poll

T = TypeVar("T")
log = logging.getLogger(__name__)

POLL_TTL = 1.0
# The oldest cached poll a vote is checked against while a fresh copy is on its way.
STALE_FOR = 10.0
RELEASE_FOR = 600
# A reservation's value: b"pending <unix time>" while its envelope is being published,
# b"queued" once JetStream acked it (b"", written before there were states, means queued).
PENDING = b"pending"
QUEUED = b"queued"
# JetStream's codes for "the subject's last sequence is not the expected one".
WRONG_LAST_SEQUENCE = (10071, 10164)


def _expecting(last: int) -> bytes:
    """The header block of a KV write that holds only if the key's last revision is ``last``
    (0: the key has none)."""
    return b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: %d\r\n\r\n" % last


def _message_id(message_id: str) -> bytes:
    """The header block by which JetStream drops a second publish of the same message."""
    return b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % message_id.encode()


class QueueDown(Exception):
    """NATS cannot take the vote now; the voter should retry later."""


class AlreadyVoted(Exception):
    pass


class PollClosed(Exception):
    pass


class BallotBox:
    def __init__(self, nats_url: str, *, publish_timeout: float = 5.0) -> None:
        self.nats_url = nats_url
        self.publish_timeout = publish_timeout
        # The longest a living request holds a pending reservation: ``call`` gives up on it
        # then. A pending one older than that lost its request with its process.
        self.orphaned_after = publish_timeout * 2 + 5
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self._registry: Registry | None = None
        self._refreshing: set[str] = set()
        self._noise: dict[tuple[str, uuid.UUID], NoiseDraws] = {}
        self._voters: dict[str, KeyValue] = {}
        self._ready: asyncio.Event | None = None
        self._thread = LoopThread("privpoll-nats", self._connect)

    async def _connect(self) -> None:
        """Connect both ways to NATS (nats-py, and the lean connection for publishes); the
        box is ready, and ``jetstream`` stops waiting, only once both are."""
        self._ready = asyncio.Event()
        nc = await naming.until_reached(
            lambda: naming.connect(
                self.nats_url, name="privpoll-ingest", buffer_while_reconnecting=False
            ),
            self.nats_url,
        )
        connection = wire.Connection(self.nats_url, "privpoll-ingest-publisher")
        await naming.until_reached(connection.open, self.nats_url)
        self._publisher = Publisher(connection, self.publish_timeout)
        self._js = nc.jetstream(timeout=self.publish_timeout)
        self._registry = Registry(self._js, every=POLL_TTL)
        self._nc = nc
        assert self._ready is not None
        self._ready.set()

    def call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the NATS loop and wait for its result."""
        try:
            return self._thread.call(work, timeout or self.publish_timeout * 2 + 5)
        except Abandoned as error:
            raise QueueDown(str(error)) from error

    @property
    def connected(self) -> bool:
        return (
            self._nc is not None
            and self._nc.is_connected
            and self._publisher is not None
            and self._publisher.connection.connected
        )

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context; waits for the first connection, never for a reconnect."""
        if self._js is None and self._ready is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), self.publish_timeout)
        if self._js is None or not self.connected:
            raise QueueDown("not connected to NATS")
        return self._js

    async def poll(self, name: str, *, fresh: bool = False) -> Poll | None:
        """The poll from the registry, as this worker last saw it if the registry did not
        change since (checked at most every POLL_TTL)."""
        await self.jetstream()
        registry = self._registry
        assert registry is not None
        try:
            return await registry.get(name, fresh=fresh)
        except (NatsTimeout, ConnectionClosedError, NoRespondersError) as error:
            cached = registry.peek(name)
            if cached is not None:
                return cached[0]
            raise QueueDown(str(error)) from error

    def recent(self, name: str) -> Poll | None:
        """The cached poll, with no hop to the NATS loop on a vote. A copy not known current
        for POLL_TTL (but for less than STALE_FOR) is still served while the loop checks the
        registry in the background: a vote never waits for that check."""
        cached = self._registry.peek(name) if self._registry is not None else None
        if cached is None or cached[0] is None:
            return None
        poll, age = cached
        if age >= POLL_TTL and name not in self._refreshing:
            self._refreshing.add(name)
            refresh = asyncio.run_coroutine_threadsafe(self.poll(name), self._thread.loop)
            refresh.add_done_callback(lambda _: self._refreshing.discard(name))
        return poll if age < STALE_FOR else None

    def remember(self, poll: Poll) -> None:
        if self._registry is not None:
            self._registry.remember(poll)

    def _noise_for(self, poll: Poll) -> NoiseDraws:
        key = (poll.name, poll.uid)
        noise = self._noise.get(key)
        if noise is None:
            noise = self._noise[key] = NoiseDraws(poll.rules)
        return noise

    async def _voters_bucket(self, poll: Poll) -> KeyValue:
        bucket = self._voters.get(poll.name)
        if bucket is None:
            bucket = self._voters[poll.name] = await (await self.jetstream()).key_value(
                naming.voters_bucket(poll.name)
            )
        return bucket

    async def reserved(self, poll: Poll) -> set[str]:
        """Reservation keys of the voters who voted (``prevent`` mode; empty in ``detect``)."""
        if poll.rules.duplicates != "prevent":
            return set()
        try:
            bucket = await self._voters_bucket(poll)
            return set(
                await topology.live_keys(
                    await self.jetstream(), naming.voters_bucket(poll.name), bucket
                )
            )
        except (NotFoundError, BucketNotFoundError):
            return set()
        except (NatsTimeout, ConnectionClosedError, NoRespondersError) as error:
            raise QueueDown(type(error).__name__) from error

    async def has_voted(self, poll: Poll, voter: str) -> bool:
        """Whether ``voter`` holds a reservation, i.e. voted (``prevent`` mode only)."""
        if poll.rules.duplicates != "prevent":
            return False
        try:
            bucket = await self._voters_bucket(poll)
            await bucket.get(tokens.reservation_key(poll.uid, voter))
        except (KeyNotFoundError, KeyDeletedError, BucketNotFoundError):
            return False
        except (NatsTimeout, ConnectionClosedError, NoRespondersError) as error:
            raise QueueDown(type(error).__name__) from error
        return True

    async def cast(self, poll: Poll, voter: str, choice: str) -> None:
        """Queue one vote durably; returns only after JetStream acked its envelope.

        In ``prevent`` mode the voter is reserved first, and the envelope's Nats-Msg-Id is the
        reservation key: if an earlier attempt's envelope reached the stream but its answer
        was lost (a crash, a timeout), JetStream drops this one as a duplicate and the earlier
        vote stands (AlreadyVoted).
        """
        await self.jetstream()
        publisher = self._publisher
        assert publisher is not None
        reservation: tuple[KeyValue, str] | None = None
        try:
            message_id, envelope = seal_bytes(self._noise_for(poll), voter, choice)
            revision = 0
            if poll.rules.duplicates == "prevent":
                bucket = await self._voters_bucket(poll)
                message_id = tokens.reservation_key(poll.uid, voter)
                revision = await self._reserve(poll, bucket, message_id)
                reservation = (bucket, message_id)
            ack = await publisher.publish(
                naming.subject(poll.name), envelope, _message_id(message_id)
            )
            if reservation is not None:
                # The vote is in; the voter need not wait for the mark that makes it final.
                self._mark_queued(poll, *reservation, revision)
            if ack.duplicate:
                raise AlreadyVoted
        except AlreadyVoted:
            raise
        except (NoRespondersError, NoStreamResponseError) as error:
            self._release(reservation)
            # A closed poll's stream stops listening on the vote subject at once (a vote
            # racing the close meets no stream: nats-py says NoStreamResponseError).
            current = await self.poll(poll.name, fresh=True)
            if current is None or current.phase() is Phase.CLOSED:
                raise PollClosed from error
            raise QueueDown("the poll's stream is not reachable") from error
        except (
            NatsTimeout,
            TimeoutError,
            ConnectionError,
            ConnectionClosedError,
            OutboundBufferLimitError,
            QueueDown,
            # JetStream refused the envelope (unavailable, out of storage, ...): not stored.
            JetStreamAPIError,
        ) as error:
            self._release(reservation)
            raise QueueDown(type(error).__name__) from error

    async def _reserve(self, poll: Poll, bucket: KeyValue, key: str) -> int:
        """Reserve the voter for this attempt: the reservation's revision, or AlreadyVoted.

        A pending reservation is another attempt in flight: wait for it (a burst of the same
        vote gets one 202 and 409s). One pending for longer than ``orphaned_after`` lost its
        request with its process (kill -9 between reserving and publishing): this attempt
        takes it over, or the voter would be locked out without a vote.
        """
        try:
            # The common case, a voter's first vote: one pipelined publish.
            return await self._kv_write(poll, key, b"%s %.3f" % (PENDING, time.time()), last=0)
        except KeyWrongLastSequenceError:
            pass
        deadline = time.monotonic() + self.publish_timeout
        while True:
            try:
                # nats-py's create also recreates a key whose last entry is a deletion.
                return await bucket.create(key, b"%s %.3f" % (PENDING, time.time()))
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await bucket.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                continue  # released meanwhile: reserve again
            state, _, since = (entry.value or b"").partition(b" ")
            if state != PENDING:
                raise AlreadyVoted
            if time.time() - float(since or 0) > self.orphaned_after:
                try:
                    return await bucket.update(
                        key, b"%s %.3f" % (PENDING, time.time()), last=entry.revision
                    )
                except KeyWrongLastSequenceError:
                    continue  # another attempt took it over first
            if time.monotonic() > deadline:
                raise QueueDown("an earlier attempt of this voter is still being queued")
            await asyncio.sleep(0.05)

    async def _kv_write(self, poll: Poll, key: str, value: bytes, *, last: int) -> int:
        """Write a reservation if its last revision is ``last`` (0: none yet): the new one."""
        assert self._publisher is not None
        subject = naming.reservation(poll.name, key)
        try:
            stored: Stored = await self._publisher.publish(subject, value, _expecting(last))
        except JetStreamAPIError as error:
            if error.err_code in WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(error.description) from error
            raise
        return stored.seq

    def _mark_queued(self, poll: Poll, bucket: KeyValue, key: str, revision: int) -> None:
        """The envelope is in: the reservation now holds for good. Sent without waiting for
        its ack (and without a task): only a failed mark needs more work."""

        def marked(answer: asyncio.Future[Stored]) -> None:
            error = None if answer.cancelled() else answer.exception()
            if error is None:
                return
            if isinstance(error, JetStreamAPIError) and error.err_code in WRONG_LAST_SEQUENCE:
                return  # taken over as orphaned: that attempt publishes under the same id
            # The vote is queued whatever happens here; a pending mark left behind would let
            # a late retry publish again (dropped as a duplicate within the window).
            self._thread.background(self._settle(bucket, key))

        assert self._publisher is not None
        subject = naming.reservation(poll.name, key)
        try:
            self._publisher.publish(subject, QUEUED, _expecting(revision)).add_done_callback(marked)
        except ConnectionError:
            self._thread.background(self._settle(bucket, key))

    async def _settle(self, bucket: KeyValue, key: str) -> None:
        deadline = time.monotonic() + RELEASE_FOR
        while time.monotonic() < deadline:
            try:
                await bucket.put(key, QUEUED)
                return
            # NATS away or the bucket being recreated: try again until RELEASE_FOR.
            except Exception:
                await asyncio.sleep(0.5)
        log.warning("gave up marking a reservation queued after %ds", RELEASE_FOR)

    def _release(self, reservation: tuple[KeyValue, str] | None) -> None:
        """Free, in the background, a reservation whose vote was not queued.

        NATS may be away right now, so the release retries until it is back. If the publish
        did reach the stream but its ack was lost, the voter's retry is dropped as a duplicate
        within the stream's dedup window; after it, the voter may vote twice, and the results
        then show it (unique voters < total votes).
        """
        if reservation is not None:
            self._thread.background(self._free(*reservation))

    async def _free(self, bucket: KeyValue, key: str) -> None:
        deadline = time.monotonic() + RELEASE_FOR
        while time.monotonic() < deadline:
            try:
                await bucket.delete(key)
                return
            # NATS away or the bucket being recreated: try again until RELEASE_FOR.
            except Exception:
                await asyncio.sleep(0.5)
        log.warning("gave up releasing a reservation after %ds", RELEASE_FOR)
