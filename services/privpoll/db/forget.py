"""The database forgets on disk (docs/privacy.md): after the re-mix, the old row versions of the
vote tables must leave the heap, its free space, the indexes and the WAL, not only the answers
to queries.

PostgreSQL: a plain VACUUM tells whether any old version is still seen by an older
transaction (then: later); once none is, ``VACUUM FULL`` copies the live rows into new files
and unlinks the old heap and index files with whatever their free space still held; then the
WAL that recorded the batches goes: a WAL switch and a checkpoint, twice, so every segment
before the last checkpoint is removable, and with ``wal_recycle = off`` (``privpoll up``
configures it) removed rather than renamed for reuse with its bytes in it.

CockroachDB keeps old versions until its garbage collection: a poll is purged only once a
read ``AS OF SYSTEM TIME`` just before its re-mix is refused.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.crdb import CrdbConnection

log = logging.getLogger(__name__)

VOTE_TABLES = ("actors", "ballots")
# What privpoll up runs its PostgreSQL with (privpoll.local.embedded), and what an external
# PostgreSQL needs for the WAL to forget (docs/privacy.md, "Running your own database").
WAL_SETTINGS: dict[str, str] = {
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "archive_mode": "off",
    "wal_recycle": "off",
    "wal_keep_size": "0",
    "min_wal_size": "32MB",
}


def rewrite_tables(conn: psycopg.Connection[Any]) -> None:
    """New heap and index files for the vote tables, the old ones unlinked.

    Locks both tables (ACCESS EXCLUSIVE) while it copies them: the sinks of open polls wait
    that long; docs/privacy.md gives the measured time. ``conn`` is in autocommit mode.
    """
    conn.execute("VACUUM FULL actors, ballots")


def drop_old_wal(conn: psycopg.Connection[Any]) -> bool:
    """Switch to a new WAL segment and checkpoint, twice: the segments that recorded the
    batches fall behind the last checkpoint's redo point and are removed. False when this
    role may not (an external PostgreSQL: grant pg_checkpoint and EXECUTE on pg_switch_wal)."""
    try:
        for _ in range(2):
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege as error:
        log.warning("cannot switch WAL or checkpoint (%s): the WAL keeps old batches", error)
        return False
    return True


def history_gone(conn: psycopg.Connection[Any], poll: uuid.UUID, remixed_at: datetime) -> bool:
    """CockroachDB: whether the rows of ``poll`` as they were just before the re-mix can no
    longer be read (the read is refused below the garbage-collection threshold)."""
    before = (remixed_at - timedelta(microseconds=1)).isoformat()
    query = sql.SQL("SELECT count(*) FROM actors AS OF SYSTEM TIME {} WHERE poll = %s").format(
        sql.Literal(before)
    )
    try:
        conn.execute(query, (poll,)).fetchone()
    except psycopg.errors.Error as error:
        if "gc threshold" in str(error).lower() or "garbage" in str(error).lower():
            return True
        raise
    return False


@dataclass(frozen=True)
class Finding:
    """One setting of the database, and whether it lets old batches outlive the purge."""

    name: str
    value: str
    safe: bool | None  # None: could not tell
    advice: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "safe": self.safe, "advice": self.advice}


CANNOT_CHECK = (
    "backups and snapshots of the disk taken before the purge",
    "the free blocks of the file system and the device (unlinked files are not overwritten)",
    "replicas and anything that streamed the WAL before the purge",
)


def check_settings(conn: psycopg.Connection[Any]) -> list[Finding]:
    """What the database is configured to keep beyond the purge, as far as SQL can tell."""
    if CrdbConnection.is_crdb(conn):
        return _check_cockroach(conn)
    found: list[Finding] = []

    def setting(name: str) -> str:
        with contextlib.suppress(psycopg.errors.Error):
            row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
            return str(row[0]) if row and row[0] is not None else ""
        return ""

    archive = setting("archive_mode")
    found.append(
        Finding(
            "archive_mode",
            archive,
            archive == "off",
            "archive_mode = off: an archive keeps every WAL segment",
        )
    )
    keep = setting("wal_keep_size")
    found.append(
        Finding(
            "wal_keep_size",
            keep,
            keep in ("0", "0MB", "0kB"),
            "wal_keep_size = 0: kept WAL holds the batches",
        )
    )
    recycle = setting("wal_recycle")
    found.append(
        Finding(
            "wal_recycle",
            recycle,
            recycle == "off",
            "wal_recycle = off: a recycled segment keeps its old bytes",
        )
    )
    slots: list[str] = []
    with contextlib.suppress(psycopg.errors.Error):
        slots = [str(r[0]) for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
    found.append(
        Finding(
            "replication slots",
            ", ".join(slots) or "none",
            not slots,
            "drop replication slots: a slot keeps WAL from its position on",
        )
    )
    return found


def _check_cockroach(conn: psycopg.Connection[Any]) -> list[Finding]:
    found: list[Finding] = []
    for table in VOTE_TABLES:
        query = sql.SQL("SHOW ZONE CONFIGURATION FROM TABLE {}").format(sql.Identifier(table))
        text = ""
        with contextlib.suppress(psycopg.errors.Error):
            text = " ".join(str(v) for row in conn.execute(query) for v in row)
        ttl = _ttl(text)
        found.append(
            Finding(
                f"{table} gc.ttlseconds",
                str(ttl) if ttl is not None else "unknown",
                None if ttl is None else ttl <= 600,
                "ALTER TABLE … CONFIGURE ZONE USING gc.ttlseconds = 600 (privpoll's migration)",
            )
        )
    protected = "unknown"
    with contextlib.suppress(psycopg.errors.Error):
        row = conn.execute("SELECT count(*) FROM system.protected_ts_records").fetchone()
        protected = str(row[0]) if row else "unknown"
    found.append(
        Finding(
            "protected timestamps",
            protected,
            None if protected == "unknown" else protected == "0",
            "backups with revision history and changefeeds hold old versions past gc.ttlseconds",
        )
    )
    return found


def _ttl(text: str) -> int | None:
    marker = "gc.ttlseconds ="
    if marker not in text:
        return None
    tail = text.split(marker, 1)[1].strip()
    digits = "".join(c for c in tail.split()[0] if c.isdigit()) if tail else ""
    return int(digits) if digits else None
