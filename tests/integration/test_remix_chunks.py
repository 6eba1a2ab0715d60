"""The re-mix in chunks on a real PostgreSQL: every row rewritten once, nothing lost.

Each test has a database of its own: the third adds a bare poll row, which other tests'
listings of polls would trip over.
"""

from __future__ import annotations

import collections
import uuid
from typing import Any

import psycopg
import pytest

from privpoll.core import randomness
from privpoll.db import migrations, remix, storage
from privpoll.local.embedded import PostgresServer
from tests.integration.conftest import fresh_database

# PostgreSQL's way (one transaction) and CockroachDB's (a transaction per chunk), both here.
WAYS = pytest.mark.parametrize("per_chunk", [False, True], ids=["one transaction", "per chunk"])


def _rows(
    conn: psycopg.Connection[Any], poll: uuid.UUID, table: str
) -> list[tuple[uuid.UUID, str]]:
    key, value = ("entry", "voter") if table == "actors" else ("id", "choice")
    query = f"SELECT {key}, {value} FROM {table} WHERE poll = %s"  # noqa: S608
    return [(row[0], row[1]) for row in conn.execute(query.encode(), (poll,)).fetchall()]


@WAYS
def test_a_chunked_remix_rewrites_every_row_once_and_keeps_the_counts(
    postgres: PostgresServer, per_chunk: bool
) -> None:
    poll = randomness.new_id()
    other = randomness.new_id()
    with psycopg.connect(fresh_database(postgres, "remix"), autocommit=True) as conn:
        migrations.migrate(conn)
        # Several batches, as the sinks write them.
        for batch in range(5):
            voters = [f"voter-{batch}-{i}" for i in range(300)]
            storage.write_actors(conn, poll, [(randomness.new_id(), v) for v in voters])
            choices = ["pizza", "sushi", "tacos"] * 200
            storage.write_ballots(conn, poll, [(randomness.new_id(), c) for c in choices])
        storage.write_ballots(conn, other, [(randomness.new_id(), "pizza")])
        before = {t: _rows(conn, poll, t) for t in ("actors", "ballots")}

        actors, ballots = remix.rewrite(conn, poll, chunk_rows=97, per_chunk=per_chunk)

        after = {t: _rows(conn, poll, t) for t in ("actors", "ballots")}
        assert (actors, ballots) == (1_500, 3_000)
        for table in ("actors", "ballots"):
            old_ids = {key for key, _ in before[table]}
            assert all(key.version == randomness.REMIXED_VERSION for key, _ in after[table])
            assert not old_ids & {key for key, _ in after[table]}
            values = collections.Counter(value for _, value in before[table])
            assert collections.Counter(value for _, value in after[table]) == values
        # Another poll's rows are not touched.
        assert all(key.version == 4 for key, _ in _rows(conn, other, "ballots"))


@WAYS
def test_a_remix_that_stopped_half_way_goes_on_where_it_stopped(
    postgres: PostgresServer, per_chunk: bool
) -> None:
    poll = randomness.new_id()
    with psycopg.connect(fresh_database(postgres, "remix"), autocommit=True) as conn:
        migrations.migrate(conn)
        storage.write_ballots(conn, poll, [(randomness.new_id(), "sushi") for _ in range(400)])
        # As a re-mix on CockroachDB leaves it after its first chunk of four.
        low, high = remix.id_ranges(4)[0]
        with conn.transaction(), conn.cursor() as cur:
            first = remix._rewrite_chunk(cur, "ballots", poll, low, high, on_server=per_chunk)
        _, ballots = remix.rewrite(conn, poll, chunk_rows=50, per_chunk=per_chunk)
        assert first + ballots == 400
        rows = _rows(conn, poll, "ballots")
        assert len(rows) == 400
        assert all(key.version == randomness.REMIXED_VERSION for key, _ in rows)


@WAYS
def test_a_poll_remixed_again_on_demand_has_every_row_rewritten_again(
    postgres: PostgresServer, per_chunk: bool
) -> None:
    poll = randomness.new_id()
    with psycopg.connect(fresh_database(postgres, "remix"), autocommit=True) as conn:
        migrations.migrate(conn)
        conn.execute(
            "INSERT INTO polls (name, uid, spec, closed) VALUES (%s, %s, '{}', true)",
            (f"again-{poll}", poll),
        )
        storage.write_ballots(conn, poll, [(randomness.new_id(), "tacos") for _ in range(300)])
        remix.rewrite(conn, poll, chunk_rows=64, per_chunk=per_chunk)
        first = {key for key, _ in _rows(conn, poll, "ballots")}
        _, ballots = remix.rewrite(conn, poll, chunk_rows=64, per_chunk=per_chunk)
        second = _rows(conn, poll, "ballots")
        assert ballots == 300
        assert all(key.version == 4 for key, _ in second)
        assert not first & {key for key, _ in second}
        # The re-mix kept the poll's counts with it: results read them, not the rows.
        kept = conn.execute("SELECT counts FROM polls WHERE uid = %s", (poll,)).fetchone()
        assert kept == ([0, 0, {"tacos": 300}],)
        conn.execute("DELETE FROM ballots WHERE poll = %s", (poll,))
        assert storage.tally(conn, poll) == (0, 0, {"tacos": 300})
        assert storage.count(conn, poll) == (0, 0, {})
