"""The pipelined publisher answers as JetStream does: stored, duplicate, refused, no stream."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError

from privpoll import messaging
from privpoll.embedded import NatsServer
from privpoll.publisher import Publisher, Stored


def test_publishes_in_flight_together_are_each_answered(nats: NatsServer) -> None:
    async def run() -> tuple[list[Stored], Stored, int, int]:
        nc = await messaging.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(name="s", subjects=["s.votes"]))
            publisher = Publisher(nc, timeout=5)
            await publisher.start()
            answers = [
                await publisher.publish("s.votes", b"%d" % i, {"Nats-Msg-Id": f"m{i}"})
                for i in range(200)
            ]
            stored = list(await asyncio.gather(*answers))
            again = await (await publisher.publish("s.votes", b"0", {"Nats-Msg-Id": "m0"}))
            info = await js.stream_info("s")
            return stored, again, int(info.state.messages), int(info.state.last_seq)
        finally:
            await nc.close()

    stored, again, messages, last = asyncio.run(run())
    assert sorted(s.seq for s in stored) == list(range(1, 201))
    assert not any(s.duplicate for s in stored)
    assert again.duplicate, "a retried publish with the same Nats-Msg-Id is dropped"
    assert (messages, last) == (200, 200)


def test_refusals_and_missing_streams_fail_the_answer(nats: NatsServer) -> None:
    async def run() -> tuple[Stored | BaseException, Stored | BaseException]:
        nc = await messaging.connect(nats.url, "test")
        try:
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(name="kv", subjects=["kv.>"]))
            publisher = Publisher(nc, timeout=5)
            await publisher.start()
            await (
                await publisher.publish("kv.a", b"1", {"Nats-Expected-Last-Subject-Sequence": "0"})
            )
            # The key exists: a second "create" is refused, as a KV create would be.
            refused = await publisher.publish(
                "kv.a", b"2", {"Nats-Expected-Last-Subject-Sequence": "0"}
            )
            nowhere = await publisher.publish("nostream.here", b"x", {})
            results = await asyncio.gather(refused, nowhere, return_exceptions=True)
            return results[0], results[1]
        finally:
            await nc.close()

    refused, nowhere = asyncio.run(run())
    assert isinstance(refused, APIError)
    assert refused.err_code in (10071, 10164)
    assert isinstance(nowhere, NoStreamResponseError)


def test_an_unanswered_publish_times_out(nats: NatsServer) -> None:
    async def run() -> None:
        nc = await messaging.connect(nats.url, "test")
        try:
            # A plain subscriber takes the message and never answers.
            await nc.subscribe("silent")
            publisher = Publisher(nc, timeout=0.3)
            await publisher.start()
            answer = await publisher.publish("silent", b"x", {})
            with pytest.raises(NatsTimeout):
                await asyncio.wait_for(answer, 5)
        finally:
            await nc.close()

    asyncio.run(run())
