"""The pipelined publisher answers as JetStream does: stored, duplicate, refused, no stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NoStreamResponseError

from privpoll import messaging
from privpoll.embedded import NatsServer
from privpoll.publisher import Publisher, Stored


@contextlib.asynccontextmanager
async def publishing(
    nats: NatsServer, subjects: list[str], timeout: float = 5
) -> AsyncIterator[tuple[JetStreamContext, Publisher]]:
    """A connection with a stream named "s" on ``subjects`` (none: no stream) and a publisher."""
    nc = await messaging.connect(nats.url, "test")
    try:
        js = nc.jetstream()
        if subjects:
            await js.add_stream(api.StreamConfig(name="s", subjects=subjects))
        publisher = Publisher(nc, timeout=timeout)
        await publisher.start()
        yield js, publisher
    finally:
        await nc.close()


def test_publishes_in_flight_together_are_each_answered(nats: NatsServer) -> None:
    async def run() -> tuple[list[Stored], Stored, int, int]:
        async with publishing(nats, ["s.votes"]) as (js, publisher):
            answers = [
                await publisher.publish("s.votes", b"%d" % i, {"Nats-Msg-Id": f"m{i}"})
                for i in range(200)
            ]
            stored = list(await asyncio.gather(*answers))
            again = await (await publisher.publish("s.votes", b"0", {"Nats-Msg-Id": "m0"}))
            info = await js.stream_info("s")
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
            await (await publisher.publish("kv.a", b"1", create))
            # The key exists: a second "create" is refused, as a KV create would be.
            refused = await publisher.publish("kv.a", b"2", create)
            nowhere = await publisher.publish("nostream.here", b"x", {})
            return await asyncio.gather(refused, nowhere, return_exceptions=True)

    refused, nowhere = asyncio.run(run())
    assert isinstance(refused, APIError)
    assert refused.err_code in (10071, 10164)
    assert isinstance(nowhere, NoStreamResponseError)


def test_an_unanswered_publish_times_out(nats: NatsServer) -> None:
    async def run() -> None:
        async with publishing(nats, [], timeout=0.3) as (_, publisher):
            # A plain subscriber takes the message and never answers.
            await publisher.nc.subscribe("silent")
            answer = await publisher.publish("silent", b"x", {})
            with pytest.raises(NatsTimeout):
                await asyncio.wait_for(answer, 5)

    asyncio.run(run())
