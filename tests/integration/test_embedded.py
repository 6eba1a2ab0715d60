"""The embedded servers of ``privpoll up`` keep their data through crashes and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import psycopg

from privpoll.local.embedded import NatsServer, PostgresServer


async def publish(url: str, text: bytes) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="EMBEDDED", subjects=["embedded.>"])
        await js.publish("embedded.note", text)
    finally:
        await nc.close()


async def read_stored(url: str) -> bytes:
    nc = await nats.connect(url)
    try:
        message = await nc.jetstream().get_msg("EMBEDDED", seq=1)
        return message.data or b""
    finally:
        await nc.close()


def test_nats_keeps_jetstream_messages_through_a_crash(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        asyncio.run(publish(server.url, b"kept"))
        server.kill()
        assert not server.running
        # A new runner on the same folder, as `privpoll up` after a crash: same address.
        again = NatsServer(tmp_path / "nats")
        assert again.url == server.url
        with again:
            assert asyncio.run(read_stored(again.url)) == b"kept"
    finally:
        server.stop()


def rows(server: PostgresServer) -> list[str]:
    with psycopg.connect(server.dsn) as conn:
        return [str(r[0]) for r in conn.execute("SELECT note FROM notes ORDER BY note")]


def test_postgres_keeps_committed_rows_through_a_crash_and_a_stop(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "postgres") as server:
        with psycopg.connect(server.dsn) as conn:
            conn.execute("CREATE TABLE notes (note text PRIMARY KEY)")
            conn.execute("INSERT INTO notes VALUES ('before the crash')")
        server.kill()
        assert not server.running
        server.start()
        assert rows(server) == ["before the crash"]

        with psycopg.connect(server.dsn) as conn:
            conn.execute("INSERT INTO notes VALUES ('before the stop')")
        server.stop()
        server.start()
        assert rows(server) == ["before the crash", "before the stop"]

    again = PostgresServer(tmp_path / "postgres")
    assert again.dsn == server.dsn
    with again:
        assert rows(again) == ["before the crash", "before the stop"]
