"""Scale: privpoll's votes/s with 1, 10, 100 and 1,000 open polls, and with 1 and 2 sinks per
poll; nats-server's memory per open poll.

The polls of a run share the run's voters and take the requests in turn. The second sink of
each role is one more ``privpoll sink ROLE --poll NAME`` process beside privpoll up's own,
in the same environment; both pull from the same durable consumer, as two replicas of a
sink Deployment would.

nats-server's resident memory, streams and store are read before the section's first poll
and once the 1,000 polls are closed and purged: no per-poll state may be left. Its memory is
read again until it is back within 10% of the first reading (for at most five minutes): the Go
runtime gives freed pages back minutes after the purge, not at once.
nats-server's resident memory is read before a run's polls are created and once they all
are (a few seconds later, so that their creation's garbage is collected): the difference over
the number of polls is what one open poll costs it, its stream, both consumers and its
voters bucket. The polls of the runs before are closed and drained by then.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil

from bench import voting
from bench.servers import Privpoll
from privpoll.bus import naming

POLLS = (1, 10, 100, 1000)
KEPT = ("accepted_per_s", "persisted_per_s", "drain_seconds", "p50_ms", "p99_ms", "lost")
# How long nats-server gets after the last poll's creation before its memory is read.
SETTLE_SECONDS = 5
# How long nats-server gets, after the purge of the 1,000 polls, to give their memory back:
# the Go runtime keeps freed pages until a collection lowers its goal (forced every two
# minutes when nothing allocates) and then returns them a little at a time.
RETURN_SECONDS = 300
RETURN_EVERY = 10


def nats_rss_kb(system: Privpoll) -> float:
    nats, _ = system.servers
    assert nats.process is not None
    return float(psutil.Process(nats.process.pid).memory_info().rss) / 1024


def nats_state(system: Privpoll) -> dict[str, float]:
    """nats-server's resident memory (KB), its streams and the bytes its store holds."""
    nats, _ = system.servers

    async def account() -> tuple[int, int]:
        nc = await naming.connect(nats.url, "bench")
        try:
            info = await nc.jetstream().account_info()
            return int(info.streams), int(info.storage)
        finally:
            await nc.close()

    streams, stored = asyncio.run(account())
    return {"rss_kb": round(nats_rss_kb(system), 1), "streams": streams, "store_bytes": stored}


def memory_returned(system: Privpoll, empty_kb: float) -> dict[str, float]:
    """nats-server's resident memory (KB) once it is back within 10% of ``empty_kb``, or after
    ``RETURN_SECONDS``, and how many seconds after the purge that was."""
    began = time.monotonic()
    while True:
        rss = nats_rss_kb(system)
        waited = time.monotonic() - began
        if rss <= 1.1 * empty_kb or waited >= RETURN_SECONDS:
            return {"rss_kb": round(rss, 1), "seconds": round(waited)}
        time.sleep(RETURN_EVERY)


def measure(system: Privpoll, work: Path, seconds: int, voters: int) -> dict[str, Any]:
    runs = []
    # What nats-server holds before the first poll of the section, to compare with what it
    # holds once the 1,000 polls are closed, re-mixed and purged.
    empty = nats_state(system)
    for count in POLLS:
        names = [f"scale{count}-{i:04d}" for i in range(count)]
        before = nats_rss_kb(system)
        created = time.monotonic()
        tokens = voting.new_polls(system, names, voters)
        create_seconds = time.monotonic() - created
        time.sleep(SETTLE_SECONDS)
        per_poll = (nats_rss_kb(system) - before) / count
        print(f"  {count} open poll(s): nats-server {per_poll:.0f} KB each", flush=True)
        run = voting.vote(system, names, tokens, work, seconds)
        run["nats_kb_per_open_poll"] = round(per_poll, 1)
        run["create_seconds"] = round(create_seconds, 1)
        if count == POLLS[-1]:
            # The purge deletes each poll's stream, voters bucket and registry entry.
            run["nats_before"] = empty
            run["nats_after_purge"] = nats_state(system)
            print(f"  nats-server before: {empty}; after the purge: {run['nats_after_purge']}")
            run["nats_returned"] = memory_returned(system, empty["rss_kb"])
            print(f"  nats-server's memory after the purge: {run['nats_returned']}", flush=True)
        runs.append(run)

    name = "two-sinks"
    print("  1 open poll, 2 sinks per role", flush=True)
    try:
        for role in naming.ROLES:
            system.start_sink(role, name)
        tokens = voting.new_polls(system, [name], voters, sinks_per_role=2)
        two = voting.vote(system, [name], tokens, work, seconds)
    finally:
        system.stop_extra_sinks()
    one = {key: runs[0][key] for key in KEPT}
    return {
        "polls": runs,
        "sinks": [
            {"sinks_per_poll": 1, "run": "the 1-poll run above", **one},
            {"sinks_per_poll": 2, **two},
        ],
    }
