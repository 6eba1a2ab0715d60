"""A process's view of the poll registry: current within a check interval, at one request per
check however many polls it serves."""

from __future__ import annotations

import asyncio
from typing import Any

from privpoll.bus import naming, topology
from privpoll.bus.registry import Registry
from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollSpec
from privpoll.local.embedded import NatsServer

EVERY = 0.3


def a_poll(name: str) -> Poll:
    spec = PollSpec.model_validate({"title": name, "choices": ["a", "b"], "voters": {"ids": ["x"]}})
    return Poll(name=name, uid=randomness.new_id(), rules=spec.rules(), eligible=1)


def run(nats: NatsServer, body: Any) -> Any:
    async def main() -> Any:
        writer = await naming.connect(nats.url, "writer")
        reader = await naming.connect(nats.url, "reader")
        try:
            return await body(writer.jetstream(), reader)
        finally:
            await reader.close()
            await writer.close()

    return asyncio.run(main())


def test_a_change_is_seen_within_the_check_interval(nats: NatsServer) -> None:
    poll = a_poll("lunch")

    async def body(js: Any, reader: Any) -> tuple[Any, ...]:
        registry = Registry(reader.jetstream(), every=EVERY)
        missing = await registry.get("lunch")  # no bucket yet: made, and nothing in it
        bucket = await topology.registry_bucket(js)
        await bucket.put("lunch", poll.to_registry())
        still_missing = await registry.get("lunch")  # within the interval: the cached answer
        await asyncio.sleep(EVERY)
        found = await registry.get("lunch")
        await bucket.put("lunch", poll.model_copy(update={"closed": True}).to_registry())
        await asyncio.sleep(EVERY)
        closed = await registry.get("lunch")
        peeked = registry.peek("lunch")
        await bucket.purge("lunch")
        await asyncio.sleep(EVERY)
        gone = await registry.get("lunch")
        return missing, still_missing, found, closed, peeked, gone

    missing, still_missing, found, closed, peeked, gone = run(nats, body)
    assert missing is None
    assert still_missing is None
    assert found == poll
    assert closed is not None
    assert closed.closed
    assert peeked is not None
    assert peeked[0] == closed
    assert 0 <= peeked[1] < EVERY
    assert gone is None


def test_many_polls_cost_one_request_per_check_while_nothing_changes(nats: NatsServer) -> None:
    polls = [a_poll(f"p{i:02d}") for i in range(40)]

    async def body(
        js: Any, reader: Any
    ) -> tuple[list[Poll | None], int, int, list[str], list[str]]:
        bucket = await topology.registry_bucket(js)
        for poll in polls:
            await bucket.put(poll.name, poll.to_registry())
        registry = Registry(reader.jetstream(), every=EVERY)
        for poll in polls:
            await registry.get(poll.name)
        names = await registry.names()
        sent = reader.stats["out_msgs"]
        seen: list[Poll | None] = []
        for _ in range(3):  # three check intervals, every poll asked for many times
            for _ in range(5):
                seen = [await registry.get(poll.name) for poll in polls]
                assert await registry.names() == names
            await asyncio.sleep(EVERY)
        requests = reader.stats["out_msgs"] - sent
        newcomer = a_poll("p99")
        await bucket.put(newcomer.name, newcomer.to_registry())
        await asyncio.sleep(EVERY)
        sent = reader.stats["out_msgs"]
        again = await registry.get(polls[0].name)
        after_change = reader.stats["out_msgs"] - sent
        assert again == polls[0]
        return seen, requests, after_change, names, await registry.names()

    seen, requests, after_change, names, after = run(nats, body)
    assert seen == polls
    assert requests <= 3, f"{requests} requests for 40 unchanged polls over 3 checks"
    # After a change, the one poll asked for is read again (a check and a read), not all 40.
    assert after_change <= 2, f"{after_change} requests to read one poll after a change"
    assert sorted(names) == [poll.name for poll in polls]
    assert sorted(after) == sorted([*names, "p99"])


def test_a_write_of_its_own_is_current_at_once(nats: NatsServer) -> None:
    poll = a_poll("own")

    async def body(js: Any, reader: Any) -> tuple[Poll | None, Poll | None]:
        registry = Registry(reader.jetstream(), every=EVERY)
        assert await registry.get("own") is None
        closed = poll.model_copy(update={"closed": True})
        await (await topology.registry_bucket(js)).put("own", closed.to_registry())
        registry.remember(closed)  # as the ingest does after closing it itself
        return await registry.get("own"), (registry.peek("own") or (None, 0))[0]

    got, peeked = run(nats, body)
    assert got is not None
    assert got.closed
    assert peeked is not None
    assert peeked.closed
