"""The re-mixer (docs/design.md invariant 5): at close, rewrite a poll's vote rows so that nothing
in the database remembers how they arrived.

While a poll is open its rows arrive in batches, and each batch leaves traces a thief can read:
rows of one commit share an ``xmin`` (PostgreSQL) or MVCC timestamp (CockroachDB), sit next to
each other (``ctid``), and appear together between two copies of the database. Once no vote
can come any more and both sinks have committed and acked everything (``topology.drained``),
the re-mixer replaces every actor and ballot row of the poll by a copy with a fresh random id,
inserted in shuffled order, in chunks that are uniformly random subsets of the rows: ONE
transaction on PostgreSQL, afterwards every row of the poll carries the same commit marker;
on CockroachDB one transaction a chunk, small enough for a million voters. Then the old row
versions must go, from the files too (``db.forget``): PostgreSQL's VACUUM removes them (it
cannot while an older transaction still sees them; then the next round tries again), VACUUM
FULL rewrites the files, and the WAL that held them is dropped; on CockroachDB the vote tables
keep old versions for a short ``gc.ttlseconds`` (set by the migrations), and a poll is purged
once a read from before its re-mix is refused.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.db import forget, storage

log = logging.getLogger(__name__)

Purge = Literal["vacuumed", "pending", "gc", "later"]


@dataclass(frozen=True)
class Remixed:
    name: str
    actors: int
    ballots: int
    purge: Purge

    def describe(self) -> str:
        done = (
            f"poll {self.name} remixed: {self.actors} votes and {self.ballots} ballots rewritten "
            "with fresh ids in one transaction"
        )
        return f"{done}; {PURGE_WORDS[self.purge]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "remixed": True,
            "votes": self.actors,
            "ballots": self.ballots,
            "purge": self.purge,
            "message": self.describe(),
        }


PURGE_WORDS: dict[Purge, str] = {
    "vacuumed": (
        "the old row versions are vacuumed away, the vote tables' files rewritten and the WAL "
        "that recorded them dropped"
    ),
    "pending": (
        "some old row versions remain because an older transaction still sees them; "
        "privpoll up vacuums again until they are gone (or run this again later)"
    ),
    "gc": (
        "CockroachDB drops the old row versions within the vote tables' gc.ttlseconds; the "
        "poll is purged once a read from before the re-mix is refused"
    ),
    "later": (
        "the old row versions go in one purge with the other polls re-mixed at the same time"
    ),
}


# Rows a chunk holds on average. A chunk is one transaction on CockroachDB, which wants
# transactions well below its size limits (tens of MB); on PostgreSQL all chunks are one
# transaction and the size only bounds the re-mixer's memory.
CHUNK_ROWS = 20_000
_MAX_ID = (1 << 128) - 1
Table = Literal["actors", "ballots"]
# (key column, value column) of each vote table.
_COLUMNS: dict[Table, tuple[str, str]] = {"actors": ("entry", "voter"), "ballots": ("id", "choice")}
# The version digit of an id: the 15th character of its text, the same canonical form on
# PostgreSQL and CockroachDB. Rows not yet rewritten are those whose digit is not the target's.
_VERSION = "substr({key}::text, 15, 1)"
Version = Literal[4, 8]
_NEW_ID = {4: randomness.new_id, 8: randomness.new_remixed_id}


def id_ranges(chunks: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``chunks`` closed ranges of equal width that tile the whole uuid space, in order.

    A chunk is the rows whose id falls in one range. Ids are drawn from the CSPRNG, so
    whether a row is in a chunk is a coin independent of every other row, of when it
    arrived and of the batch it came in: each chunk is a uniformly random subset of the
    rows (docs/privacy.md).
    """
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, not {chunks}")
    starts = [-(-(_MAX_ID + 1) * j // chunks) for j in range(chunks + 1)]
    return [(uuid.UUID(int=starts[j]), uuid.UUID(int=starts[j + 1] - 1)) for j in range(chunks)]


def chunk_of(key: uuid.UUID, chunks: int) -> int:
    """The chunk of ``id_ranges(chunks)`` that holds ``key``: a function of the id alone."""
    return key.int * chunks >> 128


def _chunks_for(rows: int, chunk_rows: int) -> int:
    return max(1, -(-rows // chunk_rows))


def _rows_not_of(cur: psycopg.Cursor[Any], table: Table, poll: uuid.UUID, target: Version) -> int:
    key, _ = _COLUMNS[table]
    query = (
        f"SELECT count(*) FROM {table} WHERE poll = %s "  # noqa: S608
        f"AND {_VERSION.format(key=key)} <> '{target}'"
    )
    row = cur.execute(query.encode(), (poll,)).fetchone()
    return int(row[0]) if row else 0


def _target(cur: psycopg.Cursor[Any], poll: uuid.UUID) -> Version:
    """The version the rewritten rows' ids get: 8 the first time (the sinks write version 4).
    A poll re-mixed again on demand has one version on every row: the other one."""
    row = cur.execute("SELECT remixed FROM polls WHERE uid = %s", (poll,)).fetchone()
    if row is None or not row[0]:
        return randomness.REMIXED_VERSION
    left = sum(_rows_not_of(cur, table, poll, randomness.REMIXED_VERSION) for table in _COLUMNS)
    return randomness.REMIXED_VERSION if left else 4


# On PostgreSQL a chunk is one statement, its rows never leaving the server: the old rows of
# the range deleted, copies with fresh ids inserted in the order of those ids. The ids come from
# gen_random_uuid(), PostgreSQL's CSPRNG (pg_strong_random: OpenSSL's), with the version digit
# set; ordered by them, the copies are in a uniformly random order, independent of the old one.
# (CockroachDB refuses a statement that modifies one table twice: there the rows go through
# the re-mixer, which draws their ids from the OS CSPRNG and shuffles them.)
_REWRITE_ON_SERVER = """
WITH old AS (
    DELETE FROM {table} WHERE poll = %(poll)s AND {key} >= %(low)s AND {key} <= %(high)s
    AND {version} <> %(target)s RETURNING {value}
)
INSERT INTO {table} (poll, {key}, {value})
SELECT %(poll)s, fresh, {value} FROM (
    SELECT overlay(gen_random_uuid()::text PLACING %(target)s FROM 15 FOR 1)::uuid AS fresh,
        {value}
    FROM old
) AS renewed ORDER BY fresh
"""


def _rewrite_chunk(
    cur: psycopg.Cursor[Any],
    table: Table,
    poll: uuid.UUID,
    low: uuid.UUID,
    high: uuid.UUID,
    target: Version = randomness.REMIXED_VERSION,
    *,
    on_server: bool,
) -> int:
    """Replace the not yet rewritten rows of one id range by fresh, shuffled copies: in one
    statement on the server (PostgreSQL), or through this process (CockroachDB)."""
    key, value = _COLUMNS[table]
    if on_server:
        statement = _REWRITE_ON_SERVER.format(
            table=table, key=key, value=value, version=_VERSION.format(key=key)
        )
        cur.execute(
            statement.encode(), {"poll": poll, "low": low, "high": high, "target": str(target)}
        )
        return max(cur.rowcount, 0)
    delete = (
        f"DELETE FROM {table} WHERE poll = %s AND {key} >= %s AND {key} <= %s "  # noqa: S608
        f"AND {_VERSION.format(key=key)} <> '{target}' RETURNING {value}"
    )
    cur.execute(delete.encode(), (poll, low, high))
    new_id = _NEW_ID[target]
    fresh: list[storage.Row] = [(new_id(), str(row[0])) for row in cur]
    # RETURNING follows the old physical order, i.e. the order of arrival: shuffle.
    randomness.shuffle(fresh)
    if fresh:
        with cur.copy(f"COPY {table} (poll, {key}, {value}) FROM STDIN".encode()) as out:
            out.write(storage.copy_text(poll, fresh))
    return len(fresh)


def rewrite(
    conn: psycopg.Connection[Any],
    poll: uuid.UUID,
    *,
    chunk_rows: int = CHUNK_ROWS,
    per_chunk: bool | None = None,
) -> tuple[int, int]:
    """Replace every vote row of the poll by a fresh, shuffled copy, chunk by chunk.

    On PostgreSQL every chunk is in ONE transaction; on CockroachDB each chunk is a
    transaction of its own (a million voters' rows are too many for one), each a uniformly
    random subset of the rows (``id_ranges``). A re-mix that stops half way goes on where
    it stopped: the rows already rewritten carry ids of version 8 and are left alone. (A poll
    re-mixed again on demand goes back to version 4, and so on: ``_target``.)
    Returns (actor rows, ballot rows). The poll is marked remixed once all are rewritten.
    ``per_chunk`` (None: as the engine needs) runs CockroachDB's way, a transaction per chunk
    and the rows through this process, on PostgreSQL too: how the tests check it.
    """
    done: dict[Table, int] = {"actors": 0, "ballots": 0}

    def chunk(table: Table, low: uuid.UUID, high: uuid.UUID, target: Version) -> Any:
        def work(cur: psycopg.Cursor[Any]) -> None:
            done[table] += _rewrite_chunk(cur, table, poll, low, high, target, on_server=False)

        return work

    def mark(cur: psycopg.Cursor[Any]) -> None:
        # The counts, kept with the poll: every row is rewritten and none can come any more.
        counts = storage.count(cur.connection, poll)
        cur.execute(
            "UPDATE polls SET remixed = true, purged = false, remixed_at = now(), "
            "purged_at = NULL, counts = %s WHERE uid = %s",
            (Jsonb(list(counts)), poll),
        )

    def everything(cur: psycopg.Cursor[Any]) -> None:
        done["actors"] = done["ballots"] = 0
        target = _target(cur, poll)
        for table in _COLUMNS:
            chunks = _chunks_for(_rows_not_of(cur, table, poll, target), chunk_rows)
            for low, high in id_ranges(chunks):
                done[table] += _rewrite_chunk(cur, table, poll, low, high, target, on_server=True)
        mark(cur)

    if per_chunk is None:
        per_chunk = storage.is_cockroach(conn)
    if not per_chunk:
        storage.run_transaction(conn, everything)
    else:
        with conn.cursor() as cur:
            target = _target(cur, poll)
        for table in _COLUMNS:
            with conn.cursor() as cur:
                chunks = _chunks_for(_rows_not_of(cur, table, poll, target), chunk_rows)
            for low, high in id_ranges(chunks):
                storage.run_transaction(conn, chunk(table, low, high, target))
        storage.run_transaction(conn, mark)
    return done["actors"], done["ballots"]


def purge(conn: psycopg.Connection[Any]) -> Purge:
    """Get rid of the vote tables' old row versions, as far as the database lets us now."""
    if storage.is_cockroach(conn):
        return "gc"
    # The deletes of this connection reach the statistics asynchronously; flush them first, so
    # that VACUUM's count of what it could not remove is the last word.
    with contextlib.suppress(psycopg.errors.UndefinedFunction):
        conn.execute("SELECT pg_stat_force_next_flush()")
    # INDEX_CLEANUP ON: the indexes must forget the old ids too, even when VACUUM would
    # rather skip them for being few.
    conn.execute("VACUUM (INDEX_CLEANUP ON) actors, ballots")
    row = conn.execute(
        "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
        "WHERE relname IN ('actors', 'ballots') AND schemaname = current_schema()"
    ).fetchone()
    if row is not None and int(row[0]) != 0:
        return "pending"
    # No transaction sees an old version any more: their bytes may still sit in free space,
    # dead index entries and the WAL. New files, then the WAL.
    forget.rewrite_tables(conn)
    forget.drop_old_wal(conn)
    return "vacuumed"


def history_gone(conn: psycopg.Connection[Any], poll: uuid.UUID) -> bool:
    """Whether no read can reach the poll's rows from before its re-mix (CockroachDB); on
    PostgreSQL, ``purge`` said so already."""
    if not storage.is_cockroach(conn):
        return True
    row = conn.execute("SELECT remixed_at FROM polls WHERE uid = %s", (poll,)).fetchone()
    if row is None or row[0] is None:
        return False
    return forget.history_gone(conn, poll, row[0])


def mark_purged(conn: psycopg.Connection[Any], poll: uuid.UUID) -> None:
    def work(cur: psycopg.Cursor[Any]) -> None:
        cur.execute("UPDATE polls SET purged = true, purged_at = now() WHERE uid = %s", (poll,))

    storage.run_transaction(conn, work)


def times(conn: psycopg.Connection[Any], name: str) -> tuple[datetime | None, datetime | None]:
    """When the poll was re-mixed and purged (None: not yet)."""
    row = conn.execute(
        "SELECT remixed_at, purged_at FROM polls WHERE name = %s", (name,)
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def remix(conn: psycopg.Connection[Any], poll: Poll, *, purge_now: bool = True) -> Remixed:
    """Rewrite a closed, drained poll's rows, then purge the old versions (unless the caller
    purges once for many polls: ``purge_now`` False). The caller marks the poll purged once
    the rest of it (the queue) is gone too (``service.lifecycle``).

    The caller has checked ``refusal`` (the drain needs NATS, this needs only the database).
    ``conn`` must be in autocommit mode: VACUUM runs outside any transaction.
    """
    actors, ballots = rewrite(conn, poll.uid)
    purged: Purge = purge(conn) if purge_now else "later"
    log.info(
        "poll %s remixed (%d votes, %d ballots); old versions %s",
        poll.name,
        actors,
        ballots,
        purged,
    )
    return Remixed(poll.name, actors, ballots, purged)


def progress(conn: psycopg.Connection[Any]) -> dict[str, tuple[bool, bool]]:
    """(remixed, purged) of every poll, by name."""
    rows = conn.execute("SELECT name, remixed, purged FROM polls").fetchall()
    return {str(name): (bool(remixed), bool(purged)) for name, remixed, purged in rows}


def progress_of(conn: psycopg.Connection[Any], name: str) -> tuple[bool, bool]:
    """(remixed, purged) of one poll; (False, False) if there is no such poll."""
    row = conn.execute("SELECT remixed, purged FROM polls WHERE name = %s", (name,)).fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)
