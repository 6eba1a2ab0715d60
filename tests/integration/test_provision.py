"""Provisioning is idempotent: running it twice changes nothing."""

from __future__ import annotations

import asyncio

from privpoll.bus import naming, topology
from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollSpec
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer
from privpoll.service import lifecycle


def test_provisioning_twice_changes_nothing(nats: NatsServer, postgres: PostgresServer) -> None:
    spec = PollSpec.model_validate(
        {"title": "t", "choices": ["a", "b"], "voters": {"ids": ["alice"]}}
    )
    poll = Poll(name="twice", uid=randomness.new_id(), rules=spec.rules(), eligible=1)
    second = poll.model_copy(update={"uid": randomness.new_id()})

    async def run() -> tuple[Poll, Poll, list[str]]:
        nc = await naming.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            with storage.connect(postgres.dsn) as conn:
                first_stored = await lifecycle.provision(js, conn, poll, spec, replicas=1)
                before = await js.stream_info(naming.stream("twice"))
                again = await lifecycle.provision(js, conn, second, spec, replicas=1)
                after = await js.stream_info(naming.stream("twice"))
            consumers = sorted(c.name for c in await js.consumers_info(naming.stream("twice")))
            await js.key_value(naming.voters_bucket("twice"))
            assert before.config.as_dict() == after.config.as_dict()
            return first_stored, again, consumers
        finally:
            await nc.close()

    first, again, consumers = asyncio.run(run())
    assert first.uid == poll.uid
    assert again.uid == poll.uid, "the first poll of a name keeps it"
    assert consumers == ["actors", "ballots"]
    with storage.connect(postgres.dsn) as conn:
        count = conn.execute("SELECT count(*) FROM polls WHERE name = 'twice'").fetchone()
    assert count == (1,)


def test_a_stale_copy_never_reopens_a_closed_poll(
    nats: NatsServer, postgres: PostgresServer
) -> None:
    spec = PollSpec.model_validate(
        {"title": "t", "choices": ["a", "b"], "voters": {"ids": ["alice"]}}
    )
    poll = Poll(name="oneway", uid=randomness.new_id(), rules=spec.rules(), eligible=1)

    async def run() -> tuple[list[str], Poll | None]:
        nc = await naming.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            with storage.connect(postgres.dsn) as conn:
                stale = await lifecycle.provision(js, conn, poll, spec, replicas=1)
                await lifecycle.close(js, conn, "oneway", replicas=1)
                # e.g. the operator's update handler, holding the poll from before the close
                await topology.provision_queue(js, stale)
            info = await js.stream_info(naming.stream("oneway"))
            return list(info.config.subjects or []), await topology.read_poll(
                await topology.registry_bucket(js), "oneway"
            )
        finally:
            await nc.close()

    subjects, registered = asyncio.run(run())
    assert subjects == [naming.closed("oneway")]
    assert registered is not None
    assert registered.closed


def test_a_bucket_lists_only_the_keys_that_hold_a_value(nats: NatsServer) -> None:
    async def run() -> tuple[list[str], list[str]]:
        nc = await naming.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            bucket = await js.create_key_value(bucket="listing", history=1)
            empty = await topology.live_keys(js, "listing", bucket)
            for key in ("ada", "grace", "edsger", "barbara"):
                await bucket.put(key, b"queued")
            await bucket.delete("grace")  # a released reservation
            await bucket.purge("edsger")
            return empty, await topology.live_keys(js, "listing", bucket)
        finally:
            await nc.close()

    empty, listed = asyncio.run(run())
    assert empty == []
    assert sorted(listed) == ["ada", "barbara"]
