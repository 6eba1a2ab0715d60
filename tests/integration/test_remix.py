"""The re-mixer against a real PostgreSQL, in the test's own process: what it rewrites, the
order it leaves on disk, and the purge of the old row versions (DESIGN.md invariant 5)."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollSpec
from privpoll.db import migrations, remix, storage
from privpoll.local.embedded import PostgresServer
from tests.integration.conftest import fresh_database
from tests.ordering import disk_order_of

VOTES = 200


@pytest.fixture(scope="module")
def dsn(postgres: PostgresServer) -> str:
    """A database of the module's own: no other test's rows or snapshots in its tables."""
    return fresh_database(postgres, "remix")


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with storage.connect(dsn) as connection:
        migrations.migrate(connection)
        yield connection


def stored_poll(conn: psycopg.Connection[Any], name: str) -> Poll:
    spec = PollSpec.model_validate(
        {"title": "t", "choices": ["a", "b"], "voters": {"ids": ["alice"]}}
    )
    poll = Poll(name=name, uid=randomness.new_id(), rules=spec.rules(), eligible=1, closed=True)
    return storage.insert_poll(conn, poll, spec)


def vote_rows(conn: psycopg.Connection[Any], poll: uuid.UUID) -> None:
    """VOTES actor rows and 2 VOTES ballot rows in batches of 20, as the sinks write them;
    every voter and every choice unique, so that a row can be followed through the rewrite."""
    for start in range(0, VOTES, 20):
        numbers = range(start, start + 20)
        storage.write_actors(conn, poll, [(randomness.new_id(), f"voter {n}") for n in numbers])
        storage.write_ballots(
            conn,
            poll,
            [(randomness.new_id(), f"choice {n}") for m in numbers for n in (2 * m, 2 * m + 1)],
        )


def rows(conn: psycopg.Connection[Any], table: str, poll: uuid.UUID) -> list[tuple[Any, ...]]:
    """(id, value, xmin) of the poll's rows, in their order on disk."""
    if table == "actors":
        query = "SELECT entry, voter, xmin::text FROM actors WHERE poll = %s ORDER BY ctid"
    else:
        query = "SELECT id, choice, xmin::text FROM ballots WHERE poll = %s ORDER BY ctid"
    return [tuple(row) for row in conn.execute(query, (poll,)).fetchall()]


# PostgreSQL's way (one transaction, the rows never leaving the server) and CockroachDB's (a
# transaction per chunk of about 100 rows, the rows shuffled by the re-mixer), both here.
WAYS = {"one transaction": None, "a transaction per chunk": 100}


@pytest.mark.parametrize("way", WAYS)
def test_rewrite_gives_fresh_ids_one_commit_and_an_order_unrelated_to_the_old_one(
    conn: psycopg.Connection[Any], way: str
) -> None:
    chunk_rows = WAYS[way]
    poll = stored_poll(conn, f"rewrite {way}")
    other = stored_poll(conn, f"other {way}")
    vote_rows(conn, poll.uid)
    vote_rows(conn, other.uid)
    before = {table: rows(conn, table, poll.uid) for table in ("actors", "ballots")}
    untouched = {table: rows(conn, table, other.uid) for table in ("actors", "ballots")}
    assert len({xmin for *_, xmin in before["actors"]}) == VOTES // 20

    if chunk_rows is None:
        assert remix.rewrite(conn, poll.uid) == (VOTES, 2 * VOTES)
    else:
        done = remix.rewrite(conn, poll.uid, chunk_rows=chunk_rows, per_chunk=True)
        assert done == (VOTES, 2 * VOTES)

    for table, old in before.items():
        new = rows(conn, table, poll.uid)
        assert Counter(value for _, value, _ in new) == Counter(value for _, value, _ in old)
        assert not {key for key, *_ in new} & {key for key, *_ in old}, "every id is fresh"
        # Re-mixed ids: uuid version 8, the same 122 random bits as a uuid4 (a re-mix can resume).
        assert all(key.version == randomness.REMIXED_VERSION for key, *_ in new)
        commits = {xmin for *_, xmin in new}
        if chunk_rows is None:
            assert len(commits) == 1, "one commit: no batch can be told apart"
        else:
            # A commit per chunk, each the rows whose old id is in one range: a random subset
            # of the old rows, whatever batch they came in.
            chunks = -(-len(old) // chunk_rows)
            by_commit: dict[str, set[str]] = {}
            for _, value, xmin in new:
                by_commit.setdefault(xmin, set()).add(value)
            by_range: dict[int, set[str]] = {}
            for key, value, _ in old:
                by_range.setdefault(remix.chunk_of(key, chunks), set()).add(value)
            assert sorted(map(sorted, by_commit.values())) == sorted(map(sorted, by_range.values()))
        assert not commits & {xmin for *_, xmin in old}
        # Each row's place before, by the order it had on disk and by its old id (a thief with
        # an old copy knows both), listed in the order the rows now have on disk: unrelated,
        # within each commit too.
        by_disk = {value: i for i, (_, value, _) in enumerate(old)}
        by_id = {value: key.int for key, value, _ in old}
        for commit in commits:
            for place, what in ((by_disk, "old order"), (by_id, "old ids")):
                rho, limit = disk_order_of([place[value] for _, value, at in new if at == commit])
                assert abs(rho) < limit, f"{table}: rank correlation {rho:.2f} with the {what}"
        assert rows(conn, table, other.uid) == untouched[table], "another poll's rows stay"
    assert remix.progress(conn)[f"rewrite {way}"] == (True, False)
    assert remix.progress(conn)[f"other {way}"] == (False, False)
    assert remix.progress_of(conn, f"rewrite {way}") == (True, False)
    assert remix.progress_of(conn, "no such poll") == (False, False)


def test_a_remix_records_when_it_was_done_and_when_purged(conn: psycopg.Connection[Any]) -> None:
    """What the API's remixedAt and purgedAt come from; the re-mixer that purges once for many
    polls re-mixes each with the purge left for later."""
    poll = stored_poll(conn, "dates")
    vote_rows(conn, poll.uid)
    assert remix.times(conn, "dates") == (None, None)
    done = remix.remix(conn, poll, purge_now=False)
    assert done == remix.Remixed("dates", VOTES, 2 * VOTES, "later")
    assert remix.progress_of(conn, "dates") == (True, False)
    remixed_at, purged_at = remix.times(conn, "dates")
    assert remixed_at is not None
    assert purged_at is None
    assert remix.history_gone(conn, poll.uid)  # on PostgreSQL the purge itself says so
    remix.mark_purged(conn, poll.uid)
    assert remix.progress_of(conn, "dates") == (True, True)
    assert remix.progress(conn)["dates"] == (True, True)
    remixed_again, purged_at = remix.times(conn, "dates")
    assert remixed_again == remixed_at
    assert purged_at is not None
    assert purged_at >= remixed_at
    assert remix.times(conn, "no such poll") == (None, None)


def test_remix_purges_the_old_versions_unless_a_snapshot_still_sees_them(
    conn: psycopg.Connection[Any], dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="privpoll.db.remix")
    poll = stored_poll(conn, "purge")
    vote_rows(conn, poll.uid)
    with psycopg.connect(dsn) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM ballots").fetchone()
        held = remix.remix(conn, poll)
        assert held == remix.Remixed("purge", VOTES, 2 * VOTES, "pending")
        assert remix.progress(conn)["purge"] == (True, False)
        holder.rollback()
    assert remix.purge(conn) == "vacuumed"
    dead = conn.execute(
        "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
        "WHERE relname IN ('actors', 'ballots')"
    ).fetchone()
    assert dead == (0,)
    again = remix.remix(conn, poll)
    assert again == remix.Remixed("purge", VOTES, 2 * VOTES, "vacuumed")
    # Purged is the lifecycle's word, once the poll's queue is gone too (service.lifecycle).
    assert remix.progress(conn)["purge"] == (True, False)
    # What an operator reads in the re-mixer's log: counts only, never a voter or a choice.
    assert [r.getMessage() for r in caplog.records if r.name == "privpoll.db.remix"] == [
        f"poll purge remixed ({VOTES} votes, {2 * VOTES} ballots); old versions pending",
        f"poll purge remixed ({VOTES} votes, {2 * VOTES} ballots); old versions vacuumed",
    ]
