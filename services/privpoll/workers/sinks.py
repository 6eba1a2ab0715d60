"""The two sinks: the actor sink keeps who voted, the ballot sink keeps the ballots.

Each reads envelopes from a poll's stream through its own durable consumer, holds them until a
batch is big enough to mix (``mixing.minBatch``), waits a jittered while for more (at most
``mixing.maxWait``), writes the batch shuffled in ONE transaction, commits, and only then
acks. A crash before the ack loses nothing (JetStream redelivers); a redelivery after the
commit changes nothing (``ON CONFLICT DO NOTHING`` on the random ids).

While the poll is open a sink always holds the newest ``minBatch`` envelopes back for the next
batch, so the batch written when the poll closes is never smaller than ``minBatch`` either:
without that, the last few voters of a poll could be written alone, and a thief watching the
database would see their envelopes isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import ValidationError

from privpoll.bus import naming, topology
from privpoll.bus.puller import NoAnswer, Puller
from privpoll.bus.registry import Registry
from privpoll.bus.topology import JetStream
from privpoll.bus.wire import IN_PROGRESS, TERMINATE, Connection, Delivery
from privpoll.core import envelope, randomness
from privpoll.core.envelope import ReadEnvelope
from privpoll.core.poll import Phase, Poll
from privpoll.db import storage
from privpoll.workers.mixing import MixingRule

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1.0
SHORT_FETCH = 0.05
SMALL_FETCH = 100
TRICKLE_PAUSE = 2.0
# A trickle's pause ends on a tick of a clock every poll of a process shares, so that the
# pulls of many polls go out together (one write to the socket for all) and their answers
# come back together, instead of one turn of the loop and one system call each.
PULL_TICK = 0.05
# Database connections of one sink process, shared by its polls; a write waits this long
# for one before the sink takes the database for unavailable and tries again.
CONNECTIONS = 4
CONNECTION_WAIT = 10.0
PROGRESS_EVERY = topology.ACK_WAIT / 3
POLL_REFRESH = 1.0
DISCOVER_EVERY = 2.0
# How often a sink looks again at a poll it finished: a new poll may have taken its name.
RECHECK_FINISHED = 60.0

Rows = list[storage.Row]
Writer = Callable[[psycopg.Connection[Any], uuid.UUID, Iterable[storage.Row]], None]


def actor_rows(read: ReadEnvelope) -> Rows:
    return [(read["actor"]["entry"], read["actor"]["voter"])]


def ballot_rows(read: ReadEnvelope) -> Rows:
    return [(b["id"], b["choice"]) for b in read["ballots"]]


ROWS: dict[naming.Role, Callable[[ReadEnvelope], Rows]] = {
    "actors": actor_rows,
    "ballots": ballot_rows,
}
WRITERS: dict[naming.Role, Writer] = {
    "actors": storage.write_actors,
    "ballots": storage.write_ballots,
}


@dataclass
class Batch:
    """Envelopes held for mixing, in stream order: each message with its rows."""

    items: list[tuple[Delivery, Rows]] = field(default_factory=list)
    ready_at: float | None = None
    progressed_at: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def messages(self) -> list[Delivery]:
        return [msg for msg, _ in self.items]

    @property
    def rows(self) -> Rows:
        return [row for _, rows in self.items for row in rows]

    def split(self, keep: int) -> tuple[Batch, Batch]:
        """(the oldest envelopes to write now, the newest ``keep`` to hold for later)."""
        cut = max(len(self.items) - keep, 0)
        now = Batch(self.items[:cut], progressed_at=self.progressed_at)
        return now, Batch(self.items[cut:], progressed_at=self.progressed_at)


@dataclass
class SinkStats:
    envelopes: int = 0
    rows: int = 0
    batches: int = 0
    terminated: int = 0


class PollSink:
    """One role's consumer of one poll's stream."""

    def __init__(
        self,
        role: naming.Role,
        js: JetStream,
        wire: Connection,
        connections: ConnectionPool[psycopg.Connection[Any]],
        registry: Registry,
        poll: Poll,
    ) -> None:
        self.role = role
        self.js = js
        self.wire = wire
        self.connections = connections
        self.registry = registry
        self.poll = poll
        self.stats = SinkStats()
        self._trickle = False
        self.gone = False
        self.finished = False

    async def run(self) -> None:
        """Until the poll is gone, or closed and everything of it stored: then the worker
        ends, and with it its subscription."""
        puller = Puller(self.wire, naming.stream(self.poll.name), naming.consumer(self.role))
        await puller.start()
        try:
            await self._consume(puller)
        finally:
            # Unsubscribing needs the connection, which may be gone with NATS: then so is the
            # subscription.
            with contextlib.suppress(ConnectionError, OSError):
                await puller.stop()

    async def _consume(self, puller: Puller) -> None:
        """Fetch, hold, write. A batch is written while the next one is fetched: the database
        and NATS work side by side, and each batch is acked once its own commit is done."""
        batch = Batch()
        writing: tuple[Batch, asyncio.Task[bool]] | None = None
        try:
            while not self.gone:
                await self._refresh()
                closing = self.poll.phase() is Phase.CLOSED
                room = self.capacity - len(batch)
                messages = await self._fetch(puller, len(batch), writing[1] if writing else None)
                await self._take(batch, messages)
                # Fewer than asked for, and few: the stream had no more. (A fetch that only
                # filled the batch's last room is no trickle: that batch is due now.)
                self._trickle = 0 < len(messages) < min(room, SMALL_FETCH)
                if self._trickle and not closing:
                    # A trickle: let it gather in the stream, then take it in one short pull,
                    # while a write (if one runs) goes on in its thread. Every pull costs
                    # nats-server a request and a write of the consumer's state, and the sink
                    # a turn of this loop, whatever it brings (a sink of many polls does
                    # little else); a long pull, or short pulls while a write runs, would
                    # bring the envelopes one or two at a time. A batch waits for more anyway.
                    await _until_tick(self._pause(batch))
                if writing is not None and writing[1].done():
                    written, task = writing
                    writing = None
                    if not task.result():  # not stored: those envelopes are the oldest again
                        batch = Batch(
                            written.items + batch.items,
                            batch.ready_at,
                            min(written.progressed_at, batch.progressed_at)
                            if batch
                            else written.progressed_at,
                        )
                drained = closing and not messages
                rule = self.rule
                if writing is None and rule.due(
                    len(batch), batch.ready_at, time.monotonic(), drained=drained
                ):
                    write, batch = batch.split(
                        len(batch) - rule.to_write(len(batch), drained=drained)
                    )
                    writing = (write, asyncio.create_task(self._flush(write)))
                await self._keep_alive(batch)
                if drained and not batch and writing is None and await self._all_stored():
                    self.finished = True
                    return
        finally:
            if writing is not None:
                # The write's own outcome was handled in _flush; here only its end matters.
                with contextlib.suppress(Exception):
                    await writing[1]

    async def _fetch(
        self, puller: Puller, held: int, writing: asyncio.Task[bool] | None
    ) -> list[Delivery]:
        """Up to what the batch has room for: a long pull until envelopes come (it answers
        the moment the first does), a short one while they trickle in or a write runs."""
        if held >= self.capacity:
            if writing is not None:
                await asyncio.wait({writing})
            return []
        try:
            short = writing is not None or self._trickle
            return await puller.fetch(
                self.capacity - held, timeout=SHORT_FETCH if short else FETCH_TIMEOUT
            )
        except NoAnswer:
            return []
        except Exception as error:  # NATS restarting: keep the batch, try again
            log.warning(
                "%s sink of %s: fetch failed (%s)", self.role, self.poll.name, type(error).__name__
            )
            await asyncio.sleep(FETCH_TIMEOUT)
            return []

    async def _all_stored(self) -> bool:
        """The stream takes no more votes and holds nothing for this sink."""
        try:
            return await topology.stored_by(self.js, self.poll.name, self.role)
        # Any error of NATS (away, the stream deleted meanwhile) means "not known to be".
        except Exception:
            return False

    @property
    def rule(self) -> MixingRule:
        return MixingRule.of(self.poll.rules.mixing)

    @property
    def capacity(self) -> int:
        """Envelopes held at most: enough to write minBatch and still hold minBatch back."""
        return self.rule.capacity

    async def _take(self, batch: Batch, messages: list[Delivery]) -> None:
        to_rows = ROWS[self.role]
        if messages and not batch:
            # The keep-alive clock starts with the oldest envelope held, not with the batch.
            batch.progressed_at = time.monotonic()
        for msg in messages:
            try:
                read = envelope.read(msg.data)
            except ValidationError:
                # Never retried forever: a message that cannot be read is dropped and counted.
                self.stats.terminated += 1
                log.error(
                    "%s sink of %s: terminated an undecodable message (%d so far)",
                    self.role,
                    self.poll.name,
                    self.stats.terminated,
                )
                self.wire.acknowledge([msg], TERMINATE)
                continue
            batch.items.append((msg, to_rows(read)))
        if batch.ready_at is None:
            batch.ready_at = self.rule.ready_at(
                len(batch), time.monotonic(), randomness.system.random()
            )

    def _pause(self, batch: Batch) -> float:
        """How long a trickle is left to gather before the next pull. A ready batch is
        pulled for once more when it is due (pulling sooner would only split what that pull
        takes); a batch not ready yet has no time bound, but one pull a maxWait (at most
        TRICKLE_PAUSE) sees the poll close and the stream fill soon enough."""
        longest = min(self.poll.rules.mixing.max_wait_seconds, TRICKLE_PAUSE)
        if batch.ready_at is None:
            return longest
        return min(max(batch.ready_at - time.monotonic(), 0.0), longest)

    async def _flush(self, batch: Batch) -> bool:
        rows = batch.rows
        try:
            await asyncio.to_thread(self._write, rows)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            log.warning(
                "%s sink of %s: database unavailable (%s); holding %d envelopes",
                self.role,
                self.poll.name,
                type(error).__name__,
                len(batch),
            )
            await asyncio.sleep(1)
            return False
        # (Without a connection the acks are lost: only a harmless redelivery.)
        self.wire.acknowledge(batch.messages)
        self.stats.envelopes += len(batch)
        self.stats.rows += len(rows)
        self.stats.batches += 1
        log.info(
            "%s sink of %s: committed a batch of %d envelopes (%d rows)",
            self.role,
            self.poll.name,
            len(batch),
            len(rows),
        )
        return True

    def _write(self, rows: Rows) -> None:
        with self.connections.connection() as conn:
            WRITERS[self.role](conn, self.poll.uid, rows)

    async def _keep_alive(self, batch: Batch) -> None:
        """In-progress acks, so JetStream does not redeliver what a batch holds for mixing."""
        now = time.monotonic()
        if batch and now - batch.progressed_at >= PROGRESS_EVERY:
            self.wire.acknowledge(batch.messages, IN_PROGRESS)
            batch.progressed_at = now

    async def _refresh(self) -> None:
        """The poll as the registry has it now (the registry is checked for changes at most
        every POLL_REFRESH, for all the polls of this process at once)."""
        try:
            found = await self.registry.get(self.poll.name)
        # NATS away: go on with the poll as last seen; the next refresh tries again.
        except Exception:
            return
        if found is None or found.uid != self.poll.uid:
            self.gone = True
        else:
            self.poll = found


async def _until_tick(seconds: float) -> None:
    """Sleep at least ``seconds``, until the next PULL_TICK of the loop's clock."""
    loop = asyncio.get_running_loop()
    # The same float for every poll waking on one tick: their timers come due together.
    wake = math.ceil((loop.time() + seconds) / PULL_TICK) * PULL_TICK
    woken: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(wake, _wake, woken)
    try:
        await woken
    finally:
        timer.cancel()


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


class Sink:
    """A sink process: one role, serving the named polls or every poll in the registry."""

    def __init__(
        self, role: naming.Role, nats_url: str, dsn: str, polls: list[str] | None = None
    ) -> None:
        self.role = role
        self.nats_url = nats_url
        self.dsn = dsn
        self.only = polls
        self.workers: dict[str, tuple[PollSink, asyncio.Task[None]]] = {}
        # Polls whose every envelope is stored: (uid, when last looked at), not served again
        # unless a new poll takes the name. A long-lived sink holds no connection for them.
        self.finished: dict[str, tuple[uuid.UUID, float]] = {}

    async def run(self) -> None:
        js, wire = await self._connect()
        # One small pool for every poll this process serves: a sink of a hundred polls
        # holds a few connections, not a hundred.
        connections: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=CONNECTIONS,
            kwargs={"autocommit": True},
            timeout=CONNECTION_WAIT,
            # No check before each use: a write on a connection that died with the database
            # fails, the pool drops that connection, and the sink writes the batch again.
            open=True,
            name=f"privpoll-sink-{self.role}",
        )
        registry = Registry(js, every=POLL_REFRESH)
        while True:
            for name in await self._names(registry):
                running = self.workers.get(name)
                if running is not None and not running[1].done():
                    continue
                if running is not None:
                    self._ended(name, *running)
                finished = self.finished.get(name)
                if finished and time.monotonic() - finished[1] < RECHECK_FINISHED:
                    continue
                try:
                    poll = await registry.get(name)
                # NATS away or the entry unreadable: this poll's worker starts next round.
                except Exception as error:
                    log.warning(
                        "%s sink of %s cannot start yet (%s); retrying",
                        self.role,
                        name,
                        type(error).__name__,
                    )
                    continue
                if finished and poll is not None and poll.uid == finished[0]:
                    self.finished[name] = (poll.uid, time.monotonic())
                elif poll is not None:
                    self.finished.pop(name, None)
                    worker = PollSink(self.role, js, wire, connections, registry, poll)
                    self.workers[name] = (worker, asyncio.create_task(worker.run()))
            await asyncio.sleep(DISCOVER_EVERY)

    def _ended(self, name: str, worker: PollSink, task: asyncio.Task[None]) -> None:
        del self.workers[name]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning(
                "%s sink of %s stopped (%s); restarting", self.role, name, type(error).__name__
            )
        elif worker.finished:
            log.info("%s sink of %s: every envelope stored; done with it", self.role, name)
            self.finished[name] = (worker.poll.uid, time.monotonic())

    async def _connect(self) -> tuple[JetStream, Connection]:
        """nats-py's JetStream API, and the pull connection beside it."""
        name = f"privpoll-sink-{self.role}"
        wire = Connection(self.nats_url, name=f"{name}-pulls")  # a URL it cannot use raises
        nc = await naming.until_reached(lambda: naming.connect(self.nats_url, name), self.nats_url)
        await naming.until_reached(wire.open, self.nats_url)
        return nc.jetstream(), wire

    async def _names(self, registry: Registry) -> list[str]:
        if self.only is not None:
            return self.only
        try:
            return await registry.names()
        # NATS away: no new polls this round; the running workers go on.
        except Exception as error:
            log.warning("cannot list polls (%s)", type(error).__name__)
            return []
