"""The one transaction helper retries serialization failures, as CockroachDB requires."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from privpoll.db import storage
from privpoll.local.embedded import PostgresServer


def test_serialization_failure_is_retried(postgres: PostgresServer) -> None:
    table = sql.Identifier(f"skew_{uuid.uuid4().hex[:8]}")
    with storage.connect(postgres.dsn) as setup:
        setup.execute(sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, n int)").format(table))
    attempts: list[int] = []
    conflict_done = threading.Event()

    def other_writer() -> None:
        with storage.connect(postgres.dsn) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 1)").format(table), (uuid.uuid4(),))
        conflict_done.set()

    def work(cur: psycopg.Cursor[Any]) -> int:
        attempts.append(1)
        cur.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        row = cur.fetchone()
        assert row is not None
        if len(attempts) == 1:
            # Write skew: another serializable transaction reads what we read and commits a
            # write first; our own write must then fail with SQLSTATE 40001.
            threading.Thread(target=other_writer).start()
            assert conflict_done.wait(10)
        cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, 2)").format(table), (uuid.uuid4(),))
        return int(row[0])

    with storage.connect(postgres.dsn) as conn:
        seen = storage.run_transaction(conn, work)
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert len(attempts) == 2, "the first attempt hit a serialization failure and was retried"
    assert seen == 1, "the retry saw the other transaction's row"
    assert total == (2,)


def test_other_errors_are_not_retried(postgres: PostgresServer) -> None:
    attempts: list[int] = []

    def work(cur: psycopg.Cursor[Any]) -> None:
        attempts.append(1)
        cur.execute("SELECT 1 / 0")

    with storage.connect(postgres.dsn) as conn, pytest.raises(psycopg.errors.DivisionByZero):
        storage.run_transaction(conn, work)
    assert attempts == [1]


AWKWARD = ["plain", "back\\slash", "tab\there", "two\nlines", "carriage\rreturn", "\\N", "ünï 🗳"]


def test_a_batch_is_stored_exactly_as_given(postgres: PostgresServer) -> None:
    # COPY's text format gives a backslash, a tab, a newline, a carriage return and \N
    # meanings of their own: a choice or voter holding one must come back unchanged, whether
    # the batch goes in by COPY or (holding an id stored already) by the INSERT fallback.
    poll = uuid.uuid4()
    rows: list[storage.Row] = [(str(uuid.uuid4()), value) for value in AWKWARD]
    rows.append((uuid.uuid4(), "a uuid object"))
    with storage.connect(postgres.dsn) as conn:
        storage.migrate(conn)
        storage.write_ballots(conn, poll, rows[:3])
        storage.write_ballots(conn, poll, rows)  # rows[:3] stored already: the fallback
        storage.write_actors(conn, poll, rows)
        ballots = conn.execute("SELECT id, choice FROM ballots WHERE poll = %s", (poll,)).fetchall()
        actors = conn.execute("SELECT entry, voter FROM actors WHERE poll = %s", (poll,)).fetchall()
    wanted = sorted((uuid.UUID(str(key)), value) for key, value in rows)
    assert sorted(ballots) == wanted
    assert sorted(actors) == wanted


def test_a_batch_that_fails_part_way_stores_nothing(postgres: PostgresServer) -> None:
    # On PostgreSQL the COPY runs with no BEGIN ... COMMIT around it: it must still be one
    # transaction, so a row the database refuses at the end takes the rows before it along.
    poll = uuid.uuid4()
    rows: list[storage.Row] = [(str(uuid.uuid4()), f"choice {n}") for n in range(500)]
    rows.append(("not-a-uuid", "refused"))
    with storage.connect(postgres.dsn) as conn:
        storage.migrate(conn)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            storage.write_ballots(conn, poll, rows)
        stored = conn.execute("SELECT count(*) FROM ballots WHERE poll = %s", (poll,)).fetchone()
        assert stored == (0,)
        # The connection is usable afterwards: the same batch without the bad row goes in.
        storage.write_ballots(conn, poll, rows[:-1])
        stored = conn.execute("SELECT count(*) FROM ballots WHERE poll = %s", (poll,)).fetchone()
    assert stored == (500,)
