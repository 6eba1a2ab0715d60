"""The sinks' mixing rule, seen by a thief who copies the database after every commit.

Both sinks run in the test's own process against a real nats-server and PostgreSQL; the test
publishes envelopes into the poll's stream as the ingest would. The rows of one commit share
an ``xmin``, and no re-mixer runs here, so every commit of both sinks stays visible as one
group, the commit at close included. Every group must hold at least ``minBatch`` envelopes
(DESIGN.md invariant 3): a smaller one would show a thief the votes of a few voters alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from privpoll.bus import naming
from privpoll.bus.registry import Registry
from privpoll.bus.wire import Connection
from privpoll.core.envelope import Envelope, seal
from privpoll.core.noise import NoiseDraws
from privpoll.core.poll import Poll
from privpoll.core.randomness import new_id
from privpoll.core.spec import PollSpec
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer
from privpoll.service import lifecycle
from privpoll.workers.sinks import PollSink
from tests.integration.conftest import CHOICES, fresh_database
from tests.ordering import INDEPENDENT, pooled

MIN_BATCH = 10
MIN_FAKES = 1  # the spec's fakeVotes.min: each envelope holds at least 1 + MIN_FAKES ballots
WAIT = 30.0


def groups(conn: psycopg.Connection[Any], table: str, poll: uuid.UUID) -> dict[str, list[str]]:
    """The poll's rows by commit (xmin), each commit's rows in their order on disk."""
    key = "entry" if table == "actors" else "id"
    found: dict[str, list[str]] = defaultdict(list)
    query = f"SELECT xmin::text, {key}::text FROM {table} WHERE poll = %s ORDER BY ctid"  # noqa: S608
    for xmin, row in conn.execute(query, (poll,)).fetchall():
        found[str(xmin)].append(str(row))
    return dict(found)


class Run:
    """One poll, its two sinks, and what the test published, in stream order."""

    def __init__(
        self, nats: NatsServer, dsn: str, connections: int = 4, wait: float = 10.0
    ) -> None:
        self.nats_url = nats.url
        self.dsn = dsn
        self.connections = connections
        self.wait = wait
        self.conn = storage.connect(dsn)
        self.sent: list[Envelope] = []

    async def start(self) -> None:
        spec = PollSpec.model_validate(
            {
                "title": "t",
                "choices": CHOICES,
                "voters": {"ids": ["alice"]},
                "noise": {"fakeVotes": {"distribution": "poisson", "mean": 2, "min": MIN_FAKES}},
                "mixing": {"minBatch": MIN_BATCH, "maxWait": "300ms"},
            }
        )
        self.nc = await naming.connect(self.nats_url, "test")
        self.js = self.nc.jetstream()
        poll = Poll(name="mixing", uid=new_id(), rules=spec.rules(), eligible=1)
        self.poll = await lifecycle.provision(self.js, self.conn, poll, spec, replicas=1)
        self.noise = NoiseDraws(self.poll.rules)
        self.wire = Connection(self.nats_url, "test-pulls")
        await self.wire.open()
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.connections,
            kwargs={"autocommit": True},
            timeout=self.wait,
            open=True,
        )
        registry = Registry(self.js)
        self.sinks = [
            PollSink(role, self.js, self.wire, self.pool, registry, self.poll)
            for role in naming.ROLES
        ]
        self.tasks = [asyncio.create_task(sink.run()) for sink in self.sinks]

    async def publish(self, count: int, pause: float = 0.0) -> None:
        for _ in range(count):
            n = len(self.sent)
            envelope = seal(self.noise, f"voter {n}", CHOICES[n % len(CHOICES)])
            await self.js.publish(
                naming.subject("mixing"),
                envelope.encode(),
                headers={"Nats-Msg-Id": str(envelope.id)},
            )
            self.sent.append(envelope)
            await asyncio.sleep(pause)

    def stored(self) -> tuple[int, int]:
        """Envelopes each sink has committed: (actor sink, ballot sink)."""
        owner = {str(b.id): str(e.id) for e in self.sent for b in e.ballots}
        ballots = groups(self.conn, "ballots", self.poll.uid)
        actors = groups(self.conn, "actors", self.poll.uid)
        envelopes = {owner[b] for rows in ballots.values() for b in rows}
        return sum(len(rows) for rows in actors.values()), len(envelopes)

    def commits(self) -> tuple[int, int]:
        return tuple(len(groups(self.conn, t, self.poll.uid)) for t in naming.ROLES)  # type: ignore[return-value]

    async def until(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            assert time.monotonic() < deadline, f"{what}: not within {WAIT} s"
            assert not any(t.done() for t in self.tasks), [t.result() for t in self.tasks]
            await asyncio.sleep(0.1)

    async def quiet(self) -> tuple[int, int]:
        """Wait until neither sink has committed for 1.5 s (maxWait is 0.3 s): each holds
        fewer than 2 minBatch envelopes then, or it would have written."""
        last, since = self.stored(), time.monotonic()
        while time.monotonic() - since < 1.5:
            await asyncio.sleep(0.1)
            now = self.stored()
            if now != last:
                last, since = now, time.monotonic()
        return last

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.wire.close()
        await self.nc.close()
        self.pool.close()
        self.conn.close()


async def scenario(run: Run) -> None:
    await run.start()
    try:
        # A few votes, then nothing for a while: an idle stream is no reason to write them.
        await run.publish(MIN_BATCH // 2)
        await run.js.publish(naming.subject("mixing"), b"{not an envelope")
        await run.quiet()
        assert run.commits() == (0, 0), "fewer than minBatch envelopes written"
        # Up to exactly 2 minBatch: a batch is due only now, and must keep minBatch back.
        await run.publish(2 * MIN_BATCH - MIN_BATCH // 2)
        await run.until(lambda: min(run.commits()) >= 1, "a first commit of each sink")
        # Votes as they come, a commit now and then.
        await run.publish(37, pause=0.03)
        held = [len(run.sent) - n for n in await run.quiet()]
        assert all(h < 2 * MIN_BATCH for h in held), held
        # Just enough for both sinks to write once more: then each holds only what it must
        # keep back, and the poll closes with that.
        before = run.commits()
        await run.publish(2 * MIN_BATCH - min(held))
        await run.until(
            lambda: all(a > b for a, b in zip(run.commits(), before, strict=True)),
            "a commit of each sink after the last votes",
        )
        await run.quiet()
        assert await lifecycle.close(run.js, run.conn, "mixing", replicas=1) is not None
        await asyncio.wait_for(asyncio.gather(*run.tasks), WAIT)
        assert all(sink.finished for sink in run.sinks)
    finally:
        await run.stop()


def check_stored(run: Run, dsn: str) -> None:
    """Every envelope stored once, whole, in commits of at least minBatch envelopes."""
    envelope_of = {str(b.id): i for i, e in enumerate(run.sent) for b in e.ballots}
    entry_of = {str(e.actor.entry): i for i, e in enumerate(run.sent)}
    with storage.connect(dsn) as conn:
        actors = groups(conn, "actors", run.poll.uid)
        ballots = groups(conn, "ballots", run.poll.uid)
    assert sorted(r for rows in actors.values() for r in rows) == sorted(entry_of)
    assert sorted(r for rows in ballots.values() for r in rows) == sorted(envelope_of)
    assert min(len(rows) for rows in actors.values()) >= MIN_BATCH
    for rows in ballots.values():
        envelopes = Counter(envelope_of[b] for b in rows)
        assert envelopes == {i: len(run.sent[i].ballots) for i in envelopes}
        assert len(envelopes) >= MIN_BATCH


def test_a_batch_whose_write_failed_is_written_again_whole_with_what_came_since(
    nats: NatsServer, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The database does not answer (here: the sinks' one connection is taken): each sink
    keeps the batch, oldest envelopes first, takes in what comes meanwhile, and writes it all
    once the database is back. Nothing lost, nothing twice, no commit below minBatch."""
    dsn = fresh_database(postgres, "mixing")
    run = Run(nats, dsn, connections=1, wait=0.5)

    async def scenario() -> None:
        await run.start()
        try:
            taken = run.pool.getconn()
            await run.publish(2 * MIN_BATCH)
            await run.until(
                lambda: {r.getMessage().split(" sink")[0] for r in caplog.records if
                         "database unavailable" in r.getMessage()} >= set(naming.ROLES),
                "a failed write of each sink",
            )  # fmt: skip
            await run.publish(5)
            run.pool.putconn(taken)
            await run.until(lambda: min(run.commits()) >= 1, "a commit of each sink")
            await run.quiet()
            assert await lifecycle.close(run.js, run.conn, "mixing", replicas=1) is not None
            await asyncio.wait_for(asyncio.gather(*run.tasks), WAIT)
            # The sinks kept what they could not write: JetStream had to deliver nothing
            # again (it would, after ACK_WAIT, had a sink dropped the failed batch).
            for role in naming.ROLES:
                info = await run.js.consumer_info(naming.stream("mixing"), role)
                # Each delivery takes a consumer sequence number: one per envelope if none
                # was delivered twice.
                assert info.delivered.consumer_seq == len(run.sent), role
        finally:
            await run.stop()

    caplog.set_level(logging.WARNING, logger="privpoll.workers.sinks")
    asyncio.run(scenario())
    check_stored(run, dsn)


def test_every_commit_of_both_sinks_holds_at_least_min_batch_envelopes(
    nats: NatsServer, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A database of its own: the poll's name is fixed, and the first poll of a name keeps it.
    dsn = fresh_database(postgres, "mixing")
    run = Run(nats, dsn)
    caplog.set_level(logging.ERROR, logger="privpoll.sinks")
    asyncio.run(scenario(run))
    # The message that was no envelope: dropped once by each sink, and said so.
    assert [sink.stats.terminated for sink in run.sinks] == [1, 1]
    assert sorted(r.getMessage() for r in caplog.records if r.name == "privpoll.workers.sinks") == [
        f"{role} sink of mixing: terminated an undecodable message (1 so far)"
        for role in naming.ROLES
    ]

    envelope_of = {str(b.id): i for i, e in enumerate(run.sent) for b in e.ballots}
    position = {str(b.id): (i, j) for i, e in enumerate(run.sent) for j, b in enumerate(e.ballots)}
    entry_of = {str(e.actor.entry): i for i, e in enumerate(run.sent)}
    with storage.connect(dsn) as conn:
        actors = groups(conn, "actors", run.poll.uid)
        ballots = groups(conn, "ballots", run.poll.uid)

    # Everything stored once: every actor entry and every ballot of every envelope.
    assert sorted(r for rows in actors.values() for r in rows) == sorted(entry_of)
    assert sorted(r for rows in ballots.values() for r in rows) == sorted(envelope_of)
    assert len(actors) >= 4, "the sinks committed during voting too"
    sizes = sorted(len(rows) for rows in actors.values())
    assert sizes[0] >= MIN_BATCH, f"actor commits below minBatch {MIN_BATCH}: {sizes}"
    for xmin, rows in ballots.items():
        envelopes = Counter(envelope_of[b] for b in rows)
        whole = {i: len(run.sent[i].ballots) for i in envelopes}
        assert envelopes == whole, f"commit {xmin} splits an envelope's ballots"
        assert len(envelopes) >= MIN_BATCH, f"a ballot commit of {len(envelopes)} envelopes"
        assert len(rows) >= MIN_BATCH * (1 + MIN_FAKES)

    # Within each commit, rows sit on disk in an order unrelated to the stream's.
    arrival = {
        **{entry: float(i) for entry, i in entry_of.items()},
        **{ballot: float(i * 1000 + j) for ballot, (i, j) in position.items()},
    }
    for name, found in (("actors", actors), ("ballots", ballots)):
        statistic = pooled([[arrival[r] for r in rows] for rows in found.values()])
        assert abs(statistic) < INDEPENDENT, f"{name}: in stream order within commits"
