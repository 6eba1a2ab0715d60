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


def store_bytes(server: NatsServer) -> bytes:
    files = (server.data_dir / "jetstream").rglob("*")
    return b"".join(path.read_bytes() for path in files if path.is_file())


def test_the_nats_store_is_encrypted_at_rest_with_a_key_not_in_its_folder(tmp_path: Path) -> None:
    """What ``privpoll up`` gets: no message readable in the store's files, and no key there;
    a store written before there was a key is encrypted at the first start with one."""
    plain = NatsServer(tmp_path / "plain")
    with plain:
        asyncio.run(publish(plain.url, b"in the clear, for comparison"))
    assert b"in the clear, for comparison" in store_bytes(plain)
    # An older privpoll's store: nats-server encrypts it at its first start with a key.
    with NatsServer(tmp_path / "plain", store_key="another-key-0123456789") as upgraded:
        assert asyncio.run(read_stored(upgraded.url)) == b"in the clear, for comparison"
    assert b"in the clear" not in store_bytes(plain)

    key = "0-a-key-that-lives-elsewhere-starting-with-a-digit"
    with NatsServer(tmp_path / "sealed", store_key=key) as sealed:
        asyncio.run(publish(sealed.url, b"voter alice chose pizza"))
        sealed.kill()  # as a crash: what is on disk is all a thief gets
    with NatsServer(tmp_path / "sealed", store_key=key) as again:
        assert asyncio.run(read_stored(again.url)) == b"voter alice chose pizza"
    on_disk = store_bytes(sealed) + b"".join(
        p.read_bytes() for p in (tmp_path / "sealed").rglob("*") if p.is_file()
    )
    assert b"alice" not in on_disk
    assert key.encode() not in on_disk


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
