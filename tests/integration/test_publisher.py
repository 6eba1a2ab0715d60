"""The pipelined publisher answers as JetStream does: stored, duplicate, refused, no stream,
no answer, and a lost connection (over the lean connection, against a real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError

from privpoll.bus import naming
from privpoll.bus.publisher import Publisher, Stored
from privpoll.bus.wire import Connection
from privpoll.local.embedded import NatsServer
from tests.integration.waiting import eventually


@contextlib.asynccontextmanager
async def publishing(
    nats: NatsServer, subjects: list[str], timeout: float = 5
) -> AsyncIterator[tuple[Client, Publisher]]:
    """A stream named "s" on ``subjects`` (none: no stream), made through nats-py, and a
    publisher on a lean connection of its own."""
    nc = await naming.connect(nats.url, "test")
    connection = Connection(nats.url, "test-publisher")
    try:
        js = nc.jetstream()
        if subjects:
            await js.add_stream(api.StreamConfig(name="s", subjects=subjects))
        await connection.open()
        yield nc, Publisher(connection, timeout=timeout)
    finally:
        await connection.close()
        await nc.close()


async def subscribed(nc: Client, subject: str) -> Subscription:
    """A subscription the server has: nats-py's flush() writes its PING straight to the
    socket, ahead of a SUB still waiting for the client's flusher task, so one flush can
    return before the server knows the subscription (a publish then meets "no
    responders", about 1 run in 50 here). The second PING goes after the SUB."""
    subscription = await nc.subscribe(subject)
    await nc.flush()
    await nc.flush()
    return subscription


def test_publishes_in_flight_together_are_each_answered(nats: NatsServer) -> None:
    async def run() -> tuple[list[Stored], Stored, int, int]:
        async with publishing(nats, ["s.votes"]) as (nc, publisher):
            answers = [
                publisher.publish("s.votes", b"%d" % i, {"Nats-Msg-Id": f"m{i}"})
                for i in range(200)
            ]
            stored = list(await asyncio.gather(*answers))
            again = await publisher.publish("s.votes", b"0", {"Nats-Msg-Id": "m0"})
            info = await nc.jetstream().stream_info("s")
            return stored, again, int(info.state.messages), int(info.state.last_seq)

    stored, again, messages, last = asyncio.run(run())
    assert sorted(s.seq for s in stored) == list(range(1, 201))
    assert not any(s.duplicate for s in stored)
    assert again.duplicate, "a retried publish with the same Nats-Msg-Id is dropped"
    assert (messages, last) == (200, 200)


def test_refusals_and_missing_streams_fail_the_answer(nats: NatsServer) -> None:
    create = {"Nats-Expected-Last-Subject-Sequence": "0"}

    async def run() -> tuple[Stored | BaseException, Stored | BaseException]:
        async with publishing(nats, ["kv.>"]) as (_, publisher):
            await publisher.publish("kv.a", b"1", create)
            # The key exists: a second "create" is refused, as a KV create would be.
            refused = publisher.publish("kv.a", b"2", create)
            nowhere = publisher.publish("nostream.here", b"x", {})
            return await asyncio.gather(refused, nowhere, return_exceptions=True)

    refused, nowhere = asyncio.run(run())
    assert isinstance(refused, APIError)
    assert refused.err_code in (10071, 10164)
    assert isinstance(nowhere, NoStreamResponseError)


def test_an_unanswered_publish_times_out(nats: NatsServer) -> None:
    async def run() -> None:
        async with publishing(nats, [], timeout=0.3) as (nc, publisher):
            # A plain subscriber takes the message and never answers.
            await subscribed(nc, "silent")
            answer = publisher.publish("silent", b"x", {})
            with pytest.raises(NatsTimeout):
                await asyncio.wait_for(answer, 5)

    asyncio.run(run())


def test_a_lost_connection_fails_its_publishes_at_once_and_the_next_ones_work(
    nats: NatsServer,
) -> None:
    async def run() -> tuple[bool, Stored]:
        async with publishing(nats, [], timeout=30) as (nc, publisher):
            silent = await subscribed(nc, "silent")
            answer = publisher.publish("silent", b"x", {})
            # Stop only once the subscriber has the message: a publish still in the
            # server's buffer when the subscriber's connection closes is answered "no
            # responders" instead, which is not what this test is about.
            await silent.next_msg(timeout=10)
            nats.stop()
            # Its timeout is 30 s: only the lost connection can fail it within 10.
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(answer, 10)
            try:
                publisher.publish("silent", b"y", {})
                refused_while_down = False
            except ConnectionError:
                refused_while_down = True
            nats.start()
            js = nc.jetstream()
            await eventually(lambda: js.add_stream(api.StreamConfig(name="s", subjects=["s.v"])))
            stored = await eventually(lambda: publisher.publish("s.v", b"z", {}))
            return refused_while_down, stored

    refused_while_down, stored = asyncio.run(run())
    assert refused_while_down, "nothing is buffered while NATS is away"
    assert stored == Stored(seq=1, duplicate=False), "publishes work again after the restart"
