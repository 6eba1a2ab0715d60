"""Migrations run once, safely: many migrators at once leave one schema, and the ingest is
not ready to take votes until the schema is there."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg.types.json import Jsonb

from privpoll.db import migrations, storage
from privpoll.local.embedded import PostgresServer
from privpoll.settings import Settings
from privpoll.web.app import create_app
from tests.integration.conftest import fresh_database

MIGRATORS = 8


def test_concurrent_migrators_all_succeed_and_leave_one_schema(postgres: PostgresServer) -> None:
    dsn = fresh_database(postgres, "migrate")
    start = threading.Barrier(MIGRATORS)

    def migrator(_: int) -> int:
        with storage.connect(dsn) as conn:
            start.wait()
            return migrations.migrate(conn)

    with ThreadPoolExecutor(MIGRATORS) as pool:
        versions = list(pool.map(migrator, range(MIGRATORS)))
    print(f"\n{MIGRATORS} migrators at once: schema versions {versions}")
    assert versions == [migrations.LATEST] * MIGRATORS
    with storage.connect(dsn) as conn:
        recorded = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert recorded == [(v,) for v in range(1, migrations.LATEST + 1)]
        columns = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'polls'"
            )
        }
        assert {"remixed", "purged"} <= columns
        # Once more, with the schema current: nothing to do, nothing changes.
        assert migrations.migrate(conn) == migrations.LATEST
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            migrations.LATEST,
        )


def test_a_database_of_the_previous_code_is_brought_up_to_date(postgres: PostgresServer) -> None:
    """A database migrated by the code before the lock table existed (no schema_lock)."""
    dsn = fresh_database(postgres, "migrate")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version int PRIMARY KEY)")
        for statement in storage.MIGRATIONS[0]:
            assert isinstance(statement, str)
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1)")
        assert migrations.version(conn) == 1
        assert migrations.migrate(conn) == migrations.LATEST


def test_the_ingest_is_not_ready_until_the_schema_is(postgres: PostgresServer) -> None:
    dsn = fresh_database(postgres, "migrate")
    settings = Settings(
        nats_url="nats://127.0.0.1:1",
        database_url=dsn,
        admin_token="admin",
        secret="secret",
    )
    client = create_app(settings).test_client()
    before = client.get("/readyz")
    assert before.status_code == 503
    assert before.json is not None
    assert before.json["checks"]["database"] is True
    assert before.json["checks"]["schema"] is False
    with storage.connect(dsn) as conn:
        migrations.migrate(conn)
    after = client.get("/readyz")
    assert after.json is not None
    assert after.json["checks"]["schema"] is True


def test_polls_of_the_previous_schema_keep_their_voter_lists(postgres: PostgresServer) -> None:
    """Migration 6 moves each poll's voter list out of its spec into the voters table, in the
    organiser's order: the invitations, the eligible count and a reissue still find them."""
    dsn = fresh_database(postgres, "migrate")
    voters = ["zoe@example.org", "adam@example.org", "mia@example.org"]
    spec = {"title": "Old", "choices": ["yes", "no"], "voters": {"ids": voters}}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version int PRIMARY KEY)")
        for number, script in enumerate(storage.MIGRATIONS[:5], start=1):
            for statement in script:
                if isinstance(statement, str):
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (%s)", (number,))
        conn.execute(
            "INSERT INTO polls (name, uid, spec) VALUES ('old', gen_random_uuid(), %s)",
            (Jsonb(spec),),
        )
        assert migrations.migrate(conn) == migrations.LATEST
        poll = storage.get_poll(conn, "old")
        assert poll is not None
        assert poll.eligible == 3
        assert storage.voter_ids(conn, "old") == voters
        assert storage.is_voter(conn, "old", "mia@example.org")
        assert not storage.is_voter(conn, "old", "eve@example.org")
        stored = conn.execute("SELECT spec FROM polls WHERE name = 'old'").fetchone()
        assert stored is not None
        assert "voters" not in stored[0]
        assert stored[0]["title"] == "Old"
