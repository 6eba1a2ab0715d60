"""The re-mixer (docs/design.md invariant 5): at close, rewrite a poll's vote rows so that nothing
in the database remembers how they arrived.

While a poll is open its rows arrive in batches, and each batch leaves traces a thief can read:
rows of one commit share an ``xmin`` (PostgreSQL) or MVCC timestamp (CockroachDB), sit next to
each other (``ctid``), and appear together between two copies of the database. Once no vote
can come any more and both sinks have committed and acked everything (``topology.drained``),
the re-mixer replaces every actor and ballot row of the poll, in ONE transaction, by a copy with
a fresh uuid4, inserted in shuffled order: afterwards every row of the poll carries the same
commit marker. Then the old row versions must go: PostgreSQL's VACUUM removes them (it cannot
while an older transaction still sees them; then the next round tries again); on CockroachDB
the vote tables keep old versions for a short ``gc.ttlseconds`` (set by the migrations).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.db import storage

log = logging.getLogger(__name__)

Purge = Literal["vacuumed", "pending", "gc"]


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
    "vacuumed": "the old row versions are vacuumed away",
    "pending": (
        "some old row versions remain because an older transaction still sees them; "
        "privpoll up vacuums again until they are gone (or run this again later)"
    ),
    "gc": "CockroachDB drops the old row versions within the vote tables' gc.ttlseconds",
}


def rewrite(conn: psycopg.Connection[Any], poll: uuid.UUID) -> tuple[int, int]:
    """Replace every vote row of the poll by a fresh, shuffled copy; ONE transaction.

    Returns (actor rows, ballot rows). The poll is marked remixed in the same transaction.
    """

    def work(cur: psycopg.Cursor[Any]) -> tuple[int, int]:
        cur.execute("DELETE FROM actors WHERE poll = %s RETURNING voter", (poll,))
        actors = [(poll, randomness.new_id(), str(row[0])) for row in cur.fetchall()]
        cur.execute("DELETE FROM ballots WHERE poll = %s RETURNING choice", (poll,))
        ballots = [(poll, randomness.new_id(), str(row[0])) for row in cur.fetchall()]
        # RETURNING follows the old physical order, i.e. the order of arrival: shuffle.
        randomness.shuffle(actors)
        randomness.shuffle(ballots)
        cur.executemany("INSERT INTO actors (poll, entry, voter) VALUES (%s, %s, %s)", actors)
        cur.executemany("INSERT INTO ballots (poll, id, choice) VALUES (%s, %s, %s)", ballots)
        cur.execute("UPDATE polls SET remixed = true, purged = false WHERE uid = %s", (poll,))
        return len(actors), len(ballots)

    return storage.run_transaction(conn, work)


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
    return "vacuumed" if row is None or int(row[0]) == 0 else "pending"


def mark_purged(conn: psycopg.Connection[Any], poll: uuid.UUID) -> None:
    def work(cur: psycopg.Cursor[Any]) -> None:
        cur.execute("UPDATE polls SET purged = true WHERE uid = %s", (poll,))

    storage.run_transaction(conn, work)


def remix(conn: psycopg.Connection[Any], poll: Poll) -> Remixed:
    """Rewrite a closed, drained poll's rows, then purge the old versions.

    The caller has checked ``refusal`` (the drain needs NATS, this needs only the database).
    ``conn`` must be in autocommit mode: VACUUM runs outside any transaction.
    """
    actors, ballots = rewrite(conn, poll.uid)
    purged = purge(conn)
    if purged != "pending":
        mark_purged(conn, poll.uid)
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
