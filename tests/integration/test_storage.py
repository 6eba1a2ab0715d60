"""The one transaction helper retries serialization failures, as CockroachDB requires."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollSpec
from privpoll.db import migrations, storage
from privpoll.local.embedded import PostgresServer
from tests.ordering import disk_order_of


def test_serialization_failure_is_retried(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="privpoll.db.storage")
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
    # What an operator reads: the conflict's code, which retry, and the wait before it
    # (10 ms, give or take half, before the first).
    said = [r.getMessage() for r in caplog.records if r.name == "privpoll.db.storage"]
    assert len(said) == 1, said
    assert re.fullmatch(r"transaction conflict \(40001\), retry 0 in 0\.0(0[5-9]|1[0-5])s", said[0])
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
        migrations.migrate(conn)
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
        migrations.migrate(conn)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            storage.write_ballots(conn, poll, rows)
        stored = conn.execute("SELECT count(*) FROM ballots WHERE poll = %s", (poll,)).fetchone()
        assert stored == (0,)
        # The connection is usable afterwards: the same batch without the bad row goes in.
        storage.write_ballots(conn, poll, rows[:-1])
        stored = conn.execute("SELECT count(*) FROM ballots WHERE poll = %s", (poll,)).fetchone()
    assert stored == (500,)


def disk_ranks(conn: psycopg.Connection[Any], table: str, poll: uuid.UUID) -> list[float]:
    """Each row of the poll, in its order on disk (ctid), given the number its value ends in
    (the order the rows were handed to the sink's writer)."""
    column = "voter" if table == "actors" else "choice"
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE poll = %s ORDER BY ctid").format(
            sql.Identifier(column), sql.Identifier(table)
        ),
        (poll,),
    ).fetchall()
    return [float(str(value).rsplit(" ", 1)[1]) for (value,) in rows]


@pytest.mark.parametrize("table", ["actors", "ballots"])
def test_a_batch_lands_on_disk_in_an_order_unrelated_to_its_arrival(
    postgres: PostgresServer, table: str
) -> None:
    """A thief reading the table in its physical order must not learn which row came first:
    rows written in stream order, whether by COPY or (a batch holding a row stored already)
    by the INSERT fallback, sit on disk in an order independent of it."""
    write = storage.write_actors if table == "actors" else storage.write_ballots
    by_copy, by_insert = uuid.uuid4(), uuid.uuid4()
    rows: list[storage.Row] = [(uuid.uuid4(), f"row {n}") for n in range(400)]
    with storage.connect(postgres.dsn) as conn:
        migrations.migrate(conn)
        write(conn, by_copy, rows)
        write(conn, by_insert, rows[:1])
        write(conn, by_insert, rows)  # holds rows[0]: the fallback writes the other 399
        for poll, n in ((by_copy, 400), (by_insert, 399)):
            arrived = disk_ranks(conn, table, poll)
            if poll == by_insert:
                arrived.remove(0.0)
            assert sorted(arrived) == [float(i) for i in range(400 - n, 400)]
            rho, limit = disk_order_of(arrived)
            assert abs(rho) < limit, f"{table}: rank correlation {rho:.2f} with arrival"


def test_tally_counts_votes_voters_and_ballots_of_one_poll(postgres: PostgresServer) -> None:
    """What the results are computed from: n actor rows, u distinct voters, N_j per choice;
    another poll's rows never count."""
    poll, other = uuid.uuid4(), uuid.uuid4()
    with storage.connect(postgres.dsn) as conn:
        migrations.migrate(conn)
        assert storage.tally(conn, poll) == (0, 0, {})
        assert storage.voted(conn, poll) == set()
        voters = ["alice", "bob", "alice", "carol"]
        storage.write_actors(conn, poll, [(uuid.uuid4(), v) for v in voters])
        storage.write_ballots(
            conn, poll, [(uuid.uuid4(), c) for c in ["pizza"] * 5 + ["sushi"] * 2 + ["tacos"]]
        )
        storage.write_actors(conn, other, [(uuid.uuid4(), "dave")])
        storage.write_ballots(conn, other, [(uuid.uuid4(), "pizza")])
        assert storage.tally(conn, poll) == (4, 3, {"pizza": 5, "sushi": 2, "tacos": 1})
        assert storage.voted(conn, poll) == {"alice", "bob", "carol"}


def test_a_voter_list_is_stored_whole_and_in_order_across_pages(postgres: PostgresServer) -> None:
    """The organiser's list, written a page of VOTER_PAGE ids at a time (COPY's text format:
    backslashes and \\N are data), read back whole, by page and one id at a time."""
    odd = ["back\\slash", "\\N", "ünï-🗳"]
    ids = odd + [f"voter-{i:05d}" for i in reversed(range(2 * storage.VOTER_PAGE + 5))]
    spec = PollSpec.model_validate({"title": "t", "choices": ["a", "b"], "voters": {"ids": ids}})
    name = f"list-{uuid.uuid4().hex[:8]}"
    poll = Poll(name=name, uid=randomness.new_id(), rules=spec.rules(), eligible=len(ids))
    with storage.connect(postgres.dsn) as conn:
        migrations.migrate(conn)
        stored = storage.insert_poll(conn, poll, spec)
        assert stored.eligible == len(ids)
        assert storage.voter_ids(conn, name) == spec.voters.listed
        assert spec.voters.listed[:3] == odd
        paged: list[tuple[int, str]] = []
        while page := storage.voter_page(conn, poll.uid, paged[-1][0] if paged else -1, 7_000):
            paged.extend(page)
        assert paged == list(enumerate(spec.voters.listed))
        assert storage.is_voter(conn, name, "\\N")
        assert storage.is_voter(conn, name, f"voter-{2 * storage.VOTER_PAGE + 4:05d}")
        assert not storage.is_voter(conn, name, "nobody")
