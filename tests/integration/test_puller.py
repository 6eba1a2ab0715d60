"""The sinks' pulls: what the consumer has at once, else the first to come; refusals raise."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext, api

from privpoll.bus import naming
from privpoll.bus.puller import Puller, PullError
from privpoll.bus.wire import Connection
from privpoll.local.embedded import NatsServer
from tests.integration.waiting import acks_reached


@contextlib.asynccontextmanager
async def pulling(
    nats: NatsServer, durable: str = "c"
) -> AsyncIterator[tuple[JetStreamContext, Puller]]:
    """A stream "s" on subject "s", its durable consumer "c", and a puller of ``durable``."""
    nc = await naming.connect(nats.url, "test")
    wire = Connection(nats.url, "test-pulls")
    try:
        await wire.open()
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name="s", subjects=["s"]))
        await js.add_consumer(
            "s", api.ConsumerConfig(durable_name="c", ack_policy=api.AckPolicy.EXPLICIT)
        )
        puller = Puller(wire, "s", durable)
        await puller.start()
        yield js, puller
    finally:
        await wire.close()
        await nc.close()


def test_a_backlog_comes_at_once_in_order_up_to_the_batch(nats: NatsServer) -> None:
    async def run() -> tuple[list[bytes], list[bytes], float, bool]:
        async with pulling(nats) as (js, puller):
            for i in range(10):
                await js.publish("s", b"%d" % i)
            first = await puller.fetch(4, timeout=5)
            started = time.monotonic()
            rest = await puller.fetch(100, timeout=5)
            took = time.monotonic() - started
            puller.connection.acknowledge(first + rest)
            acked = await acks_reached(js, "s", "c")
            return [m.data for m in first], [m.data for m in rest], took, acked

    first, rest, took, acked = asyncio.run(run())
    assert first == [b"0", b"1", b"2", b"3"]
    assert rest == [b"%d" % i for i in range(4, 10)]
    assert took < 2, "a pull that got what there was does not wait out its expiry"
    assert acked, "the messages' own acks reach the consumer"


def test_an_empty_consumer_gives_nothing_then_the_first_message_to_come(
    nats: NatsServer,
) -> None:
    async def run() -> tuple[list[bytes], list[bytes], float]:
        async with pulling(nats) as (js, puller):
            nothing = await puller.fetch(10, timeout=0.3)

            async def later() -> None:
                await asyncio.sleep(0.3)
                await js.publish("s", b"late")

            task = asyncio.create_task(later())
            started = time.monotonic()
            came = await puller.fetch(10, timeout=10)
            took = time.monotonic() - started
            await task
            return [m.data for m in nothing], [m.data for m in came], took

    nothing, came, took = asyncio.run(run())
    assert nothing == []
    assert came == [b"late"]
    assert took < 5, "the pull ends when the first message came, not at its expiry"


def test_a_pull_from_a_missing_consumer_raises(nats: NatsServer) -> None:
    async def run() -> None:
        async with pulling(nats, durable="gone") as (_, puller):
            await puller.fetch(10, timeout=0.5)

    with pytest.raises(PullError, match="no such consumer"):
        asyncio.run(run())
