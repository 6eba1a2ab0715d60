"""Applying the schema (``storage.MIGRATIONS``) once, whoever else tries at the same moment.

The operator (on Kubernetes) and ``privpoll up`` migrate before the ingest takes votes; the
ingest's ``/readyz`` stays 503 until the database holds the schema version this code expects
(``is_current``). Provisioning a poll calls ``migrate`` too, which returns at once when the
schema is current.

PostgreSQL runs DDL inside transactions: one migrator at a time holds the lock row of
``schema_lock`` (``SELECT ... FOR UPDATE``, portable SQL, no advisory lock), applies what is
missing and records the versions, all in one transaction; the others wait for it, then find
nothing left to do. CockroachDB runs a schema change concurrently with the transaction that
asked for it, and refuses schema changes mixed with writes in one transaction: there every
statement runs on its own, each one idempotent (``IF NOT EXISTS``), retried while a concurrent
change of the same table gets in its way, and the version is recorded once all of them ran.
"""

from __future__ import annotations

import logging
import time
from typing import Any, LiteralString

import psycopg

from privpoll.core import randomness
from privpoll.db import storage

log = logging.getLogger(__name__)

LATEST = len(storage.MIGRATIONS)
ATTEMPTS = 10

_BOOTSTRAP: tuple[LiteralString, ...] = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS schema_lock (id int PRIMARY KEY)",
    "INSERT INTO schema_lock (id) VALUES (1) ON CONFLICT DO NOTHING",
)


def version(conn: psycopg.Connection[Any]) -> int:
    """The newest schema version the database holds (0: none yet)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def is_current(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database holds every migration this code knows."""
    return version(conn) >= LATEST


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Apply the missing migrations; returns the schema version. ``conn`` in autocommit."""
    cockroach = storage.is_cockroach(conn)
    if not is_current(conn):
        for statement in _BOOTSTRAP:
            _retried(conn, statement)
        if cockroach:
            _migrate_cockroach(conn)
        else:
            storage.run_transaction(conn, _migrate_locked)
    if cockroach:
        # Checked whenever privpoll starts, not only when it migrates: a purge waits for this
        # garbage collection (docs/privacy.md).
        storage.ensure_gc_ttl(conn)
    return version(conn)


def _retried(
    conn: psycopg.Connection[Any], statement: LiteralString, params: tuple[Any, ...] = ()
) -> None:
    """One idempotent statement in a transaction of its own, retried while it collides with
    a concurrent one: two ``CREATE TABLE IF NOT EXISTS`` at once make PostgreSQL fail one with
    a unique violation of its catalog; CockroachDB fails statements that meet a schema change
    in progress with errors of several codes, 40001 among them."""
    for attempt in range(ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(statement, params)
            return
        except psycopg.errors.Error as error:
            if attempt == ATTEMPTS - 1 or isinstance(error, psycopg.errors.SyntaxError):
                raise
            delay = min(0.05 * 2**attempt, 2.0) * (0.5 + randomness.system.random())
            log.info("schema statement collided (%s), retry %d", error.sqlstate, attempt + 1)
            time.sleep(delay)


def _migrate_locked(cur: psycopg.Cursor[Any]) -> None:
    cur.execute("SELECT id FROM schema_lock WHERE id = 1 FOR UPDATE")
    # Read after the lock is ours: a migrator we waited for has committed its versions.
    cur.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in cur.fetchall()}
    for number, script in enumerate(storage.MIGRATIONS, start=1):
        if number in done:
            continue
        for statement in script:
            if not isinstance(statement, storage.OnCockroach):
                cur.execute(statement)
        cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        log.info("schema migration %d applied", number)


def _migrate_cockroach(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for number, script in enumerate(storage.MIGRATIONS, start=1):
        if number in done:
            continue
        for statement in script:
            _retried(
                conn, statement.sql if isinstance(statement, storage.OnCockroach) else statement
            )
        _retried(
            conn,
            "INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (number,),
        )
        log.info("schema migration %d applied", number)
