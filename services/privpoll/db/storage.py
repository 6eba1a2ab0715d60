"""PostgreSQL / CockroachDB: schema, the one transaction retry helper, and the vote tables.

Privacy rules (docs/design.md, storage invariants): ``actors`` and ``ballots`` hold no timestamp,
serial or other ordered value; primary keys are uuid4 from the OS CSPRNG; every batch is
written in one transaction in shuffled order.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, TypeVar

import psycopg
import psycopg.crdb
from psycopg import sql
from psycopg.types.json import Jsonb

from privpoll.core import randomness
from privpoll.core.poll import Poll
from privpoll.core.spec import PollRules, PollSpec

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = {"40001", "40P01"}


@dataclass(frozen=True)
class OnCockroach:
    """A statement only CockroachDB understands: skipped on PostgreSQL, and run right after
    its migration commits, outside the migration's transaction."""

    sql: LiteralString


# Each migration is a list of idempotent statements, applied once (privpoll.db.migrations): on
# PostgreSQL in one transaction, on CockroachDB one statement per transaction.
MIGRATIONS: list[tuple[LiteralString | OnCockroach, ...]] = [
    (
        """CREATE TABLE IF NOT EXISTS polls (
            name text PRIMARY KEY,
            uid uuid NOT NULL UNIQUE,
            spec jsonb NOT NULL,
            closed boolean NOT NULL DEFAULT false
        )""",
        """CREATE TABLE IF NOT EXISTS actors (
            poll uuid NOT NULL,
            entry uuid NOT NULL,
            voter text NOT NULL,
            PRIMARY KEY (poll, entry)
        )""",
        """CREATE TABLE IF NOT EXISTS ballots (
            poll uuid NOT NULL,
            id uuid NOT NULL,
            choice text NOT NULL,
            PRIMARY KEY (poll, id)
        )""",
    ),
    (
        # The re-mixer's progress (never on the vote tables): rows rewritten, old versions gone.
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS remixed boolean NOT NULL DEFAULT false",
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS purged boolean NOT NULL DEFAULT false",
        # CockroachDB keeps old row versions for hours by default; the re-mixer's rewrite hides
        # who voted how only once the versions before it are gone: ten minutes here.
        OnCockroach("ALTER TABLE actors CONFIGURE ZONE USING gc.ttlseconds = 600"),
        OnCockroach("ALTER TABLE ballots CONFIGURE ZONE USING gc.ttlseconds = 600"),
    ),
    (
        # Reissued links (tokens.reissue_key -> generation): on the polls table, never on a
        # vote table, and no time in it.
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS reissued jsonb NOT NULL DEFAULT '{}'",
    ),
    (
        # E-mail to voters (privpoll.service.invitations): who was mailed what, never how they
        # voted; no time either. kind: invitation or reminder; state: queued, sending, sent, failed
        # or skipped (voted before their reminder went out).
        """CREATE TABLE IF NOT EXISTS mail (
            poll uuid NOT NULL,
            kind text NOT NULL,
            voter text NOT NULL,
            state text NOT NULL,
            detail text NOT NULL DEFAULT '',
            PRIMARY KEY (poll, kind, voter)
        )""",
    ),
    (
        # When the re-mix and the purge happened (the API's remixedAt and purgedAt). Times on
        # the polls table only: never on the vote tables.
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS remixed_at timestamptz",
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS purged_at timestamptz",
    ),
    (
        # The eligible voters in a table of their own, in the organiser's order: a poll's row
        # stays small (it is read for every results, close and vote-page request) and a million
        # invitations are read a page at a time. Who may vote, never who voted or how.
        """CREATE TABLE IF NOT EXISTS voters (
            poll uuid NOT NULL,
            position int NOT NULL,
            voter text NOT NULL,
            PRIMARY KEY (poll, position)
        )""",
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS eligible int NOT NULL DEFAULT 0",
        # A re-mixed poll's counts (``tally``), kept by the re-mix: they change no more, and
        # counting a million rows for every results request takes a second. Totals only.
        "ALTER TABLE polls ADD COLUMN IF NOT EXISTS counts jsonb",
        # Polls created before: their lists move out of the spec (only rows still holding one).
        "INSERT INTO voters (poll, position, voter) "
        "SELECT p.uid, (v.n - 1)::int, v.id FROM polls AS p, "
        "jsonb_array_elements_text(p.spec -> 'voters' -> 'ids') WITH ORDINALITY AS v (id, n) "
        "ON CONFLICT DO NOTHING",
        "UPDATE polls SET eligible = coalesce(jsonb_array_length(spec -> 'voters' -> 'ids'), 0), "
        "spec = spec - 'voters' WHERE spec -> 'voters' IS NOT NULL",
    ),
]

GC_TTL_SECONDS = 600


def is_cockroach(conn: psycopg.Connection[Any]) -> bool:
    # CockroachDB reports crdb_version when the connection starts: no query needed.
    return psycopg.crdb.CrdbConnection.is_crdb(conn)


def connect(dsn: str, *, timeout: float = 5) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(int(timeout), 1))


def run_transaction(
    conn: psycopg.Connection[Any],
    work: Callable[[psycopg.Cursor[Any]], T],
    *,
    attempts: int = 10,
    one_statement: bool = False,
) -> T:
    """Run ``work`` in one transaction, retrying serialization failures (SQLSTATE 40001).

    CockroachDB runs every transaction SERIALIZABLE and asks clients to retry on 40001; so
    does PostgreSQL at that isolation level. ``work`` must be safe to run again.

    ``one_statement`` work on PostgreSQL, with autocommit on, runs with no BEGIN and COMMIT:
    a single statement is a transaction of its own there, whole or not at all, and the two
    round trips are saved. (CockroachDB may commit an implicit COPY in parts; it always gets
    the explicit transaction.)
    """
    implicit = one_statement and conn.autocommit and not is_cockroach(conn)
    for attempt in range(attempts):
        try:
            with contextlib.nullcontext() if implicit else conn.transaction(), conn.cursor() as cur:
                return work(cur)
        except psycopg.errors.Error as error:
            if error.sqlstate not in RETRYABLE_SQLSTATES or attempt == attempts - 1:
                raise
            delay = min(0.01 * 2**attempt, 1.0) * (0.5 + randomness.system.random())
            log.info("transaction conflict (%s), retry %d in %.3fs", error.sqlstate, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def ensure_gc_ttl(conn: psycopg.Connection[Any], *, attempts: int = 5) -> None:
    """CockroachDB: the vote tables keep old row versions GC_TTL_SECONDS at most. Checked at
    every start, set (and retried) when missing: a purge waits for this garbage collection."""
    for table in ("actors", "ballots"):
        shown = sql.SQL("SHOW ZONE CONFIGURATION FROM TABLE {}").format(sql.Identifier(table))
        change = sql.SQL("ALTER TABLE {} CONFIGURE ZONE USING gc.ttlseconds = {}").format(
            sql.Identifier(table), sql.Literal(GC_TTL_SECONDS)
        )
        for attempt in range(attempts):
            text = " ".join(str(v) for row in conn.execute(shown) for v in row)
            if f"gc.ttlseconds = {GC_TTL_SECONDS}" in text:
                break
            try:
                conn.execute(change)
            except psycopg.errors.InsufficientPrivilege as error:
                raise RuntimeError(
                    f"privpoll may not set the zone configuration of table {table} ({error}): "
                    f"GRANT ZONECONFIG ON TABLE {table} TO its role, or run as an admin once: "
                    f"ALTER TABLE {table} CONFIGURE ZONE USING gc.ttlseconds = {GC_TTL_SECONDS}"
                ) from error
            except psycopg.errors.Error as error:
                if attempt == attempts - 1:
                    raise
                log.info("zone configuration of %s failed (%s); retrying", table, error.sqlstate)
                time.sleep(0.5 * (attempt + 1))
        else:
            raise RuntimeError(
                f"the zone configuration of table {table} does not hold gc.ttlseconds = "
                f"{GC_TTL_SECONDS} after {attempts} attempts: set it by hand"
            )


# A poll's row as a Poll. Its voter list is in the voters table (up to 1,000,000 ids, which
# only the invitations and a few checks read); ``spec - 'voters'`` for rows of old versions.
POLL = sql.SQL("name, uid, spec - 'voters', eligible, closed, reissued")
# The voters a CockroachDB transaction writes (it wants transactions well below its limits).
VOTER_CHUNK = 10_000
# The voters ``voter_page`` reads at once.
VOTER_PAGE = 10_000


def _poll(row: Sequence[Any]) -> Poll:
    return Poll(
        name=row[0],
        uid=row[1],
        rules=PollRules.model_validate(row[2]),
        eligible=int(row[3] or 0),
        closed=row[4],
        reissued=dict(row[5] or {}),
    )


def _rules_document(spec: PollSpec) -> Jsonb:
    """The spec as stored: everything but the voter list (in the voters table)."""
    return Jsonb(spec.rules().to_document())


def insert_poll(conn: psycopg.Connection[Any], poll: Poll, spec: PollSpec) -> Poll:
    """Insert the poll's row and its voters unless a poll of that name exists; return the
    stored row. On PostgreSQL all in one transaction; on CockroachDB the voters follow in
    transactions of ``VOTER_CHUNK`` rows (an interrupted creation is completed by the next
    ``apply``, which finds the list different and writes it again)."""
    voters = spec.voters.listed
    cockroach = is_cockroach(conn)

    def work(cur: psycopg.Cursor[Any]) -> Poll:
        cur.execute(
            "INSERT INTO polls (name, uid, spec, closed, eligible) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING RETURNING uid",
            (poll.name, poll.uid, _rules_document(spec), poll.closed, len(voters)),
        )
        if cur.fetchone() is not None and not cockroach:
            _copy_voters(cur, poll.uid, voters)
        cur.execute(sql.SQL("SELECT {} FROM polls WHERE name = %s").format(POLL), (poll.name,))
        row = cur.fetchone()
        assert row is not None
        return _poll(row)

    stored = run_transaction(conn, work)
    if cockroach and stored.uid == poll.uid:
        _insert_voters_in_chunks(conn, poll.uid, voters)
    return stored


def _copy_voters(cur: psycopg.Cursor[Any], poll: uuid.UUID, voters: Sequence[str]) -> None:
    start = f"{poll}\t"
    with cur.copy("COPY voters (poll, position, voter) FROM STDIN") as out:
        for first in range(0, len(voters), VOTER_PAGE):
            page = voters[first : first + VOTER_PAGE]
            out.write(
                "".join([f"{start}{first + i}\t{_copy_value(v)}\n" for i, v in enumerate(page)])
            )


def _insert_voters_in_chunks(
    conn: psycopg.Connection[Any], poll: uuid.UUID, voters: Sequence[str]
) -> None:
    for first in range(0, len(voters), VOTER_CHUNK):
        chunk = list(voters[first : first + VOTER_CHUNK])

        def work(cur: psycopg.Cursor[Any], first: int = first, chunk: list[str] = chunk) -> None:
            cur.execute(
                "INSERT INTO voters (poll, position, voter) "
                "SELECT %s, (%s + t.n - 1)::int, t.v FROM unnest(%s::text[]) "
                "WITH ORDINALITY AS t (v, n) ON CONFLICT DO NOTHING",
                (poll, first, chunk),
            )

        run_transaction(conn, work)


def get_poll(conn: psycopg.Connection[Any], name: str) -> Poll | None:
    query = sql.SQL("SELECT {} FROM polls WHERE name = %s").format(POLL)
    row = conn.execute(query, (name,)).fetchone()
    return _poll(row) if row else None


def voter_ids(conn: psycopg.Connection[Any], name: str) -> list[str]:
    """The poll's voter list, in the organiser's order (every id at once: see ``voter_page``)."""
    rows = conn.execute(
        "SELECT v.voter FROM voters AS v JOIN polls AS p ON p.uid = v.poll "
        "WHERE p.name = %s ORDER BY v.position",
        (name,),
    )
    return [str(row[0]) for row in rows]


def voter_page(
    conn: psycopg.Connection[Any], poll: uuid.UUID, after: int = -1, size: int = VOTER_PAGE
) -> list[tuple[int, str]]:
    """Up to ``size`` voters (position, id) after position ``after``, in order."""
    rows = conn.execute(
        "SELECT position, voter FROM voters WHERE poll = %s AND position > %s "
        "ORDER BY position LIMIT %s",
        (poll, after, size),
    )
    return [(int(row[0]), str(row[1])) for row in rows]


def is_voter(conn: psycopg.Connection[Any], name: str, voter: str) -> bool:
    """Whether ``voter`` is on the poll's list."""
    row = conn.execute(
        "SELECT 1 FROM voters AS v JOIN polls AS p ON p.uid = v.poll "
        "WHERE p.name = %s AND v.voter = %s LIMIT 1",
        (name, voter),
    ).fetchone()
    return row is not None


def list_polls(conn: psycopg.Connection[Any]) -> list[Poll]:
    rows = conn.execute(sql.SQL("SELECT {} FROM polls ORDER BY name").format(POLL)).fetchall()
    return [_poll(row) for row in rows]


def close_poll(conn: psycopg.Connection[Any], name: str) -> Poll | None:
    def work(cur: psycopg.Cursor[Any]) -> Poll | None:
        cur.execute(
            sql.SQL("UPDATE polls SET closed = true WHERE name = %s RETURNING {}").format(POLL),
            (name,),
        )
        row = cur.fetchone()
        return _poll(row) if row else None

    return run_transaction(conn, work)


def update_spec(
    conn: psycopg.Connection[Any], name: str, spec: PollSpec, *, voters_changed: bool
) -> Poll | None:
    """Store a changed spec (the caller checked the change is safe); its voter list too when
    ``voters_changed``."""
    voters = spec.voters.listed
    cockroach = is_cockroach(conn)

    def work(cur: psycopg.Cursor[Any]) -> Poll | None:
        cur.execute(
            sql.SQL(
                "UPDATE polls SET spec = %s, eligible = %s WHERE name = %s RETURNING {}"
            ).format(POLL),
            (_rules_document(spec), len(voters), name),
        )
        row = cur.fetchone()
        if row is None:
            return None
        updated = _poll(row)
        if voters_changed:
            cur.execute("DELETE FROM voters WHERE poll = %s", (updated.uid,))
            if not cockroach:
                _copy_voters(cur, updated.uid, voters)
        return updated

    updated = run_transaction(conn, work)
    if updated is not None and voters_changed and cockroach:
        _insert_voters_in_chunks(conn, updated.uid, voters)
    return updated


def reissue(conn: psycopg.Connection[Any], name: str, key: str) -> Poll | None:
    """One more generation for the voter named by ``key`` (tokens.reissue_key)."""

    def work(cur: psycopg.Cursor[Any]) -> Poll | None:
        cur.execute(
            sql.SQL(
                "UPDATE polls SET reissued = reissued || jsonb_build_object("
                "%s::text, COALESCE((reissued ->> %s::text)::int, 0) + 1) "
                "WHERE name = %s RETURNING {}"
            ).format(POLL),
            (key, key, name),
        )
        row = cur.fetchone()
        return _poll(row) if row else None

    return run_transaction(conn, work)


def row_counts(conn: psycopg.Connection[Any], poll: uuid.UUID) -> tuple[int, int]:
    """(actor rows, ballot rows) of a poll."""
    actors = conn.execute("SELECT count(*) FROM actors WHERE poll = %s", (poll,)).fetchone()
    ballots = conn.execute("SELECT count(*) FROM ballots WHERE poll = %s", (poll,)).fetchone()
    return int(actors[0] if actors else 0), int(ballots[0] if ballots else 0)


def delete_poll(conn: psycopg.Connection[Any], poll: Poll) -> None:
    """The poll's row and every vote row of it, in one transaction."""

    def work(cur: psycopg.Cursor[Any]) -> None:
        cur.execute("DELETE FROM actors WHERE poll = %s", (poll.uid,))
        cur.execute("DELETE FROM ballots WHERE poll = %s", (poll.uid,))
        cur.execute("DELETE FROM mail WHERE poll = %s", (poll.uid,))
        cur.execute("DELETE FROM voters WHERE poll = %s", (poll.uid,))
        cur.execute("DELETE FROM polls WHERE uid = %s", (poll.uid,))

    run_transaction(conn, work)


# One row of a vote table beside its poll: (a random id, the voter or the choice). The id is
# a uuid, or its text as the sinks read it from an envelope.
Row = tuple[uuid.UUID | str, str]
# COPY's text format: these four stand for themselves only when escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def write_actors(conn: psycopg.Connection[Any], poll: uuid.UUID, rows: Iterable[Row]) -> None:
    """One batch of (entry, voter), shuffled, in one transaction."""
    _write(
        conn,
        "COPY actors (poll, entry, voter) FROM STDIN",
        "INSERT INTO actors (poll, entry, voter) "
        "SELECT %s, r.entry, r.voter FROM unnest(%s::uuid[], %s::text[]) AS r (entry, voter) "
        "ON CONFLICT DO NOTHING",
        poll,
        rows,
    )


def write_ballots(conn: psycopg.Connection[Any], poll: uuid.UUID, rows: Iterable[Row]) -> None:
    """One batch of (ballot id, choice), shuffled, in one transaction."""
    _write(
        conn,
        "COPY ballots (poll, id, choice) FROM STDIN",
        "INSERT INTO ballots (poll, id, choice) "
        "SELECT %s, r.id, r.choice FROM unnest(%s::uuid[], %s::text[]) AS r (id, choice) "
        "ON CONFLICT DO NOTHING",
        poll,
        rows,
    )


def _write(
    conn: psycopg.Connection[Any],
    copy: LiteralString,
    insert: LiteralString,
    poll: uuid.UUID,
    rows: Iterable[Row],
) -> None:
    """The whole batch in shuffled order, in one transaction: by COPY, the fastest way in.

    COPY cannot skip rows that exist already. A batch that holds one (a redelivery of an
    envelope whose ack was lost after its commit) is rolled back whole and written again as
    one INSERT over two arrays that skips them (``unnest`` keeps the arrays' order).
    """
    shuffled = list(rows)
    randomness.shuffle(shuffled)

    def by_copy(cur: psycopg.Cursor[Any]) -> None:
        with cur.copy(copy) as out:
            out.write(copy_text(poll, shuffled))

    def by_insert(cur: psycopg.Cursor[Any]) -> None:
        keys = [key if isinstance(key, uuid.UUID) else uuid.UUID(key) for key, _ in shuffled]
        values = [value for _, value in shuffled]
        cur.execute(insert, (poll, keys, values))

    try:
        run_transaction(conn, by_copy, one_statement=True)
    except psycopg.errors.UniqueViolation:
        run_transaction(conn, by_insert)


def copy_text(poll: uuid.UUID, rows: Sequence[Row]) -> str:
    """The rows, in their order, as COPY's text format: one string for the whole batch
    (an eighth of the CPU of handing psycopg one row at a time)."""
    start = f"{poll}\t"
    return "".join([f"{start}{key}\t{_copy_value(value)}\n" for key, value in rows])


def _copy_value(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


Tally = tuple[int, int, dict[str, int]]


def tally(conn: psycopg.Connection[Any], poll: uuid.UUID) -> Tally:
    """(real votes n, distinct voters u, stored ballots per choice N_j): as the re-mix kept
    them once the poll is re-mixed, else counted."""
    kept = conn.execute(
        "SELECT counts FROM polls WHERE uid = %s AND remixed AND counts IS NOT NULL", (poll,)
    ).fetchone()
    if kept is not None:
        votes, voters, stored = kept[0]
        return int(votes), int(voters), {str(k): int(v) for k, v in stored.items()}
    return count(conn, poll)


def count(conn: psycopg.Connection[Any], poll: uuid.UUID) -> Tally:
    """``tally`` from the vote tables' rows."""
    row = conn.execute(
        "SELECT count(*), count(DISTINCT voter) FROM actors WHERE poll = %s", (poll,)
    ).fetchone()
    assert row is not None
    stored = dict(
        conn.execute(
            "SELECT choice, count(*) FROM ballots WHERE poll = %s GROUP BY choice", (poll,)
        ).fetchall()
    )
    return int(row[0]), int(row[1]), {str(k): int(v) for k, v in stored.items()}


def voted(conn: psycopg.Connection[Any], poll: uuid.UUID) -> set[str]:
    """Voters with a stored vote (never joined to any choice)."""
    rows = conn.execute("SELECT DISTINCT voter FROM actors WHERE poll = %s", (poll,)).fetchall()
    return {str(r[0]) for r in rows}
