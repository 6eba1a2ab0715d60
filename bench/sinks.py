"""One ballot sink process against raw COPY of the same rows into the same PostgreSQL.

A poll is provisioned the way the API does it (``lifecycle.provision``), its stream filled
with the envelopes of ``votes`` votes (``envelope.seal`` with the poll's noise, published
with many in flight), and closed: the sink then drains everything in full batches, without
waiting to mix. Then ONE ``privpoll sink ballots --poll NAME`` process starts, and the
ballots table is counted every 50 ms. The sink's rate is measured from the first rows seen
stored to the last, so its start (Python imports, connecting, the first fetch and batch) is
not counted; that start is reported on its own. Then the same (poll, id, choice) rows go by
COPY, binary and then text (the target compares with the faster), each in one transaction,
into a fresh table of the same schema (``LIKE ballots INCLUDING ALL``: the same primary key
index).

Runs while privpoll up is NOT running: its sinks would share the stream. The poll is removed
afterwards (stream, registry entry, rows), so that no sink drains it later.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, LiteralString

from bench.load import CHOICES
from bench.servers import peak_rss_mb
from privpoll.bus import naming, topology
from privpoll.core import randomness
from privpoll.core.envelope import Envelope, seal
from privpoll.core.noise import NoiseDraws
from privpoll.core.poll import Poll
from privpoll.core.spec import PollSpec
from privpoll.db import storage
from privpoll.service import lifecycle
from privpoll.workers.mixing import MAX_BATCH

POLL = "sink-bench"
# The poll is closed before the sink starts, so it writes full batches; a small maxWait
# keeps a partial batch from waiting.
MIXING = {"minBatch": 10, "maxWait": "100ms"}
IN_FLIGHT = 2000

BallotRow = tuple[uuid.UUID, uuid.UUID, str]


async def _fill(nats_url: str, dsn: str, votes: int) -> tuple[Poll, list[BallotRow]]:
    """Provision the poll, publish ``votes`` envelopes into its stream, close it."""
    voters = [f"s{i:07d}" for i in range(votes)]
    spec = PollSpec.model_validate(
        {"title": POLL, "choices": CHOICES, "voters": {"ids": voters}, "mixing": MIXING}
    )
    poll = Poll(name=POLL, uid=randomness.new_id(), rules=spec.rules(), eligible=votes)
    nc = await naming.connect(nats_url, name="privpoll-bench")
    try:
        js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
        with storage.connect(dsn) as conn:
            poll = await lifecycle.provision(js, conn, poll, spec, replicas=1)
        noise = NoiseDraws(poll.rules)
        envelopes: list[Envelope] = [
            seal(noise, voter, CHOICES[i % len(CHOICES)]) for i, voter in enumerate(voters)
        ]
        subject = naming.subject(POLL)
        pending = [
            await js.publish_async(subject, e.encode(), headers={"Nats-Msg-Id": str(e.id)})
            for e in envelopes
        ]
        acks = await asyncio.gather(*pending)
        if any(ack.duplicate for ack in acks):
            raise RuntimeError("JetStream took an envelope for a duplicate")
        with storage.connect(dsn) as conn:
            await lifecycle.close(js, conn, POLL, replicas=1)
    finally:
        await nc.close()
    rows = [(poll.uid, b.id, b.choice) for e in envelopes for b in e.ballots]
    return poll, rows


async def _remove(nats_url: str, dsn: str, poll: Poll) -> None:
    nc = await naming.connect(nats_url, name="privpoll-bench")
    try:
        await topology.remove_queue(nc.jetstream(), POLL)
    finally:
        await nc.close()
    with storage.connect(dsn) as conn:
        storage.delete_poll(conn, poll)
        conn.execute("VACUUM ballots")


def _time_sink(nats_url: str, dsn: str, poll: Poll, rows: int, log: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PRIVPOLL_NATS_URL": nats_url,
        "PRIVPOLL_DATABASE_URL": dsn,
        "PRIVPOLL_LOG_LEVEL": "WARNING",
    }
    with storage.connect(dsn) as conn, log.open("ab") as out:
        started = time.monotonic()
        sink = subprocess.Popen(
            [sys.executable, "-m", "privpoll", "sink", "ballots", "--poll", POLL],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            first: tuple[float, int] | None = None
            deadline = started + 600
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM ballots WHERE poll = %s", (poll.uid,)
                ).fetchone()
                now, stored = time.monotonic(), int(row[0]) if row else 0
                if stored and first is None:
                    first = (now, stored)
                if stored >= rows:
                    break
                if sink.poll() is not None or now > deadline:
                    raise RuntimeError(f"the ballot sink stored {stored} of {rows} rows; see {log}")
                time.sleep(0.05)
            peak = peak_rss_mb(sink.pid)
        finally:
            sink.send_signal(signal.SIGINT)
            try:
                sink.wait(30)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait()
    assert first is not None
    measured = rows - first[1]
    seconds = now - first[0]
    return {
        "rows": rows,
        "startup_seconds": round(first[0] - started, 2),
        "first_rows": first[1],
        "seconds": round(seconds, 3),
        "rows_per_s": round(measured / seconds, 1) if seconds > 0 else None,
        "whole_seconds": round(now - started, 2),
        "peak_rss_mb": peak,
    }


def _time_copy(dsn: str, rows: list[BallotRow], *, binary: bool) -> dict[str, Any]:
    """COPY of ``rows`` into a fresh table like ``ballots``, in one transaction, timed."""
    statement: LiteralString = "COPY ballots_copy (poll, id, choice) FROM STDIN"
    if binary:
        statement = "COPY ballots_copy (poll, id, choice) FROM STDIN (FORMAT BINARY)"
    with storage.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS ballots_copy")
        conn.execute("CREATE TABLE ballots_copy (LIKE ballots INCLUDING ALL)")
        try:
            started = time.monotonic()
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                if binary:
                    copy.set_types(["uuid", "uuid", "text"])
                for row in rows:
                    copy.write_row(row)
            seconds = time.monotonic() - started
            counted = conn.execute("SELECT count(*) FROM ballots_copy").fetchone()
            stored = int(counted[0]) if counted else 0
        finally:
            conn.execute("DROP TABLE IF EXISTS ballots_copy")
    if stored != len(rows):
        raise RuntimeError(f"COPY stored {stored} of {len(rows)} rows")
    return {
        "format": "binary" if binary else "text",
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / seconds, 1),
    }


def measure(nats_url: str, dsn: str, votes: int, work: Path) -> dict[str, Any]:
    """Ballot rows/s of one sink process, and of raw COPY, for the same rows.

    ``votes`` is rounded up to whole sink batches, three at least (the first is not
    timed): a fetch that finds fewer envelopes than it asks for waits out its timeout, once
    per drain, which is not the sink's pace.
    """
    votes = max(math.ceil(votes / MAX_BATCH), 3) * MAX_BATCH
    filled = time.monotonic()
    poll, rows = asyncio.run(_fill(nats_url, dsn, votes))
    queued = time.monotonic() - filled
    print(f"  {votes} envelopes ({len(rows)} ballot rows) queued in {queued:.1f} s", flush=True)
    try:
        sink = _time_sink(nats_url, dsn, poll, len(rows), work / "sink-bench.log")
        copy = _time_copy(dsn, rows, binary=True)
        text = _time_copy(dsn, rows, binary=False)
    finally:
        asyncio.run(_remove(nats_url, dsn, poll))
    return {"votes": votes, "sink": sink, "copy": copy, "copy_text": text}
