"""What encrypting the NATS store at rest costs: ``python -m bench.store_cipher``.

The same workload against an embedded nats-server without a store key and with one
(ChaCha20-Poly1305, what ``privpoll up`` runs): envelopes of a vote's size
published to an Interest stream with both sinks' consumers, many in flight at once, then
pulled and acked by both, as the sinks do. Prints messages per second of each phase; the
figures go to docs/privacy.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import nats
from nats.js import api

from privpoll.local.embedded import STORE_CONFIG, NatsServer

ENVELOPE = 420  # bytes: one voter and 1 + K ballots of a poll with three choices


async def workload(url: str, count: int) -> tuple[float, float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(
            name="CIPHER",
            subjects=["cipher.votes"],
            retention=api.RetentionPolicy.INTEREST,
            storage=api.StorageType.FILE,
        )
        for role in ("actors", "ballots"):
            await js.add_consumer(
                "CIPHER", api.ConsumerConfig(durable_name=role, ack_policy=api.AckPolicy.EXPLICIT)
            )
        body = os.urandom(ENVELOPE)
        start = time.perf_counter()
        for _ in range(0, count, 500):
            acks = [await js.publish_async("cipher.votes", body) for _each in range(500)]
            await asyncio.gather(*acks)
        published = count / (time.perf_counter() - start)
        start = time.perf_counter()
        for role in ("actors", "ballots"):
            pull = await js.pull_subscribe("cipher.votes", durable=role, stream="CIPHER")
            got = 0
            while got < count:
                batch = await pull.fetch(500, timeout=10)
                await asyncio.gather(*[message.ack_sync() for message in batch])
                got += len(batch)
        acked = 2 * count / (time.perf_counter() - start)
        return published, acked
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    args = parser.parse_args()
    assert "chacha" in STORE_CONFIG
    with tempfile.TemporaryDirectory() as root:
        runs = [("plain", None), ("chacha", "bench-key-" + "x" * 32)] * args.rounds
        for number, (label, key) in enumerate(runs):
            with NatsServer(Path(root) / f"{label}-{number}", store_key=key) as server:
                published, acked = asyncio.run(workload(server.url, args.count))
            print(f"{label:7} publish {published:8.0f} msg/s   pull+ack {acked:8.0f} msg/s")


if __name__ == "__main__":
    main()
