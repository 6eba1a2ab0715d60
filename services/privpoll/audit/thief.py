"""``privpoll audit``: read the database the way a thief would, and run the linkage attack.

This is the I/O half (``linkage`` is the pure half). A thief who copies the database gets the
tables and their hidden columns: on PostgreSQL ``xmin`` (the transaction that wrote a row) and
``ctid`` (where it sits), on CockroachDB ``crdb_internal_mvcc_timestamp``. A thief who comes
back, or keeps a replica, gets a series of such copies: ``record`` takes them, each as a JSON
file holding what changed since the one before (the first holds everything).

The audit reports, for one poll, only numbers about all voters together (the largest
posterior, how many voters are exposed with certainty, the attacker's accuracy against the
prior), never a voter next to a choice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from privpoll.audit import linkage
from privpoll.core.spec import PollRules
from privpoll.db import storage

log = logging.getLogger(__name__)

FORMAT = 1
TABLES = ("actors", "ballots")
# (poll uid, key, value, commit marker, physical place)
Tuple = tuple[str, str, str, int | None, str | None]

_READ: dict[str, dict[str, LiteralString]] = {
    "postgresql": {
        "actors": "SELECT poll::text, entry::text, voter, xmin::text, ctid::text FROM actors",
        "ballots": "SELECT poll::text, id::text, choice, xmin::text, ctid::text FROM ballots",
    },
    "cockroachdb": {
        "actors": "SELECT poll::text, entry::text, voter, "
        "crdb_internal_mvcc_timestamp::text, NULL FROM actors",
        "ballots": "SELECT poll::text, id::text, choice, "
        "crdb_internal_mvcc_timestamp::text, NULL FROM ballots",
    },
}


@dataclass(frozen=True)
class PollRow:
    name: str
    uid: str
    closed: bool
    spec: dict[str, Any]


@dataclass
class Dump:
    """One full copy of the tables, as a thief holds it."""

    database: str
    taken: str
    polls: dict[str, PollRow]
    rows: Mapping[str, AbstractSet[Tuple]] = field(default_factory=dict)

    def poll(self, name: str) -> PollRow | None:
        return self.polls.get(name)

    def snapshot(self, uid: str, seen: dict[Tuple, linkage.Row] | None = None) -> linkage.Snapshot:
        """The poll's rows in the attacker's terms (``seen`` shares rows between snapshots)."""
        seen = {} if seen is None else seen
        closed = any(p.closed for p in self.polls.values() if p.uid == uid)
        picked: dict[str, tuple[linkage.Row, ...]] = {}
        for table in TABLES:
            found = []
            for item in self.rows.get(table, ()):
                if item[0] == uid:
                    row = seen.get(item)
                    if row is None:
                        row = seen[item] = linkage.Row(item[1], item[2], item[3])
                    found.append(row)
            picked[table] = tuple(found)
        return linkage.Snapshot(picked["actors"], picked["ballots"], closed=closed)


def _commit(database: str, text: str | None) -> int | None:
    if text is None:
        return None
    if database == "cockroachdb":
        # An HLC timestamp "wall.logical": order by wall time, then by the logical counter.
        return int(Decimal(text) * 10**10)
    return int(text)


def read(conn: psycopg.Connection[Any], names: Sequence[str] = ()) -> Dump:
    """The whole of the tables, hidden columns included, as of one moment.

    With ``names``, only the rows of those polls (a thief with a narrow query, and a faster
    copy when the recorder must keep up with every commit).
    """
    database = "cockroachdb" if storage.is_cockroach(conn) else "postgresql"
    rows: dict[str, set[Tuple]] = {}
    with conn.transaction():
        if database == "postgresql":
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        polls = {
            str(name): PollRow(str(name), str(uid), bool(closed), spec)
            for name, uid, closed, spec in conn.execute(
                "SELECT name, uid::text, closed, spec FROM polls"
            ).fetchall()
            if not names or name in names
        }
        uids = [p.uid for p in polls.values()]
        for table in TABLES:
            query = _READ[database][table]
            found = (
                conn.execute(query + " WHERE poll = ANY(%s::uuid[])", (uids,)).fetchall()
                if names
                else conn.execute(query).fetchall()
            )
            rows[table] = {
                (
                    str(p),
                    str(k),
                    str(v),
                    _commit(database, c),
                    None if place is None else str(place),
                )
                for p, k, v, c, place in found
            }
    return Dump(database, datetime.now(UTC).isoformat(), polls, rows)


def write(directory: Path, number: int, dump: Dump, before: Dump | None) -> Path:
    """Store a dump as what changed since ``before`` (everything when there is none)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "database": dump.database,
        "taken": dump.taken,
        "polls": [vars(p) for p in dump.polls.values()],
    }
    for table in TABLES:
        now = dump.rows.get(table, set())
        then = before.rows.get(table, set()) if before else set()
        document[table] = {
            "added": sorted(now - then, key=str),
            "removed": sorted(([t[0], t[1]] for t in then - now), key=str),
        }
    path = directory / f"{number:06d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)
    return path


def load(directory: Path, poll: str | None = None) -> list[Dump]:
    """Every dump in a folder that ``record`` wrote, in the order taken, each made whole.

    With ``poll`` (a name), the dumps hold that poll's rows only: a long series of copies of a
    busy database is large, and one poll is what an audit looks at.
    """
    files = sorted(directory.glob("[0-9]*.json"))
    if not files:
        raise FileNotFoundError(f"no snapshots in {directory} (privpoll audit --record takes them)")
    dumps: list[Dump] = []
    current: dict[str, dict[tuple[str, str], Tuple]] = {t: {} for t in TABLES}
    kept: dict[str, frozenset[Tuple]] = {t: frozenset() for t in TABLES}
    for path in files:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"{path} is not a privpoll snapshot (format {FORMAT})")
        polls = {p["name"]: PollRow(**p) for p in document["polls"]}
        uid = polls[poll].uid if poll is not None and poll in polls else None
        for table in TABLES:
            rows = current[table]
            changes = document[table]
            for owner, key in changes["removed"]:
                rows.pop((owner, key), None)
            for owner, key, value, commit, place in changes["added"]:
                rows[(owner, key)] = (owner, key, value, commit, place)
            if changes["removed"] or changes["added"]:
                kept[table] = frozenset(r for r in rows.values() if poll is None or r[0] == uid)
        if poll is not None:
            polls = {n: p for n, p in polls.items() if n == poll}
        # Unchanged tables share one frozenset between dumps: a long series stays small.
        dumps.append(Dump(document["database"], document["taken"], polls, dict(kept)))
    return dumps


def record(
    dsn: str,
    directory: Path,
    *,
    interval: float = 0.05,
    stop: threading.Event | None = None,
    polls: Sequence[str] = (),
) -> int:
    """Look at the tables every ``interval`` seconds; copy them whenever they changed.

    Runs until ``stop`` is set or Ctrl-C; returns how many snapshots the folder holds. With
    ``polls`` it keeps the rows of those polls only (by name), like a thief with a narrow
    query. A cheap fingerprint (row counts, newest commit marker, closed flags) tells whether
    anything changed, so a copy is taken after about every commit without reading every row
    fifty times a second.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    copier = _Copier(dsn, directory, polls)
    try:
        while not stop.is_set():
            copier.look()
            stop.wait(interval)
        copier.look()  # what happened just before the stop is kept too
    except KeyboardInterrupt:
        pass
    finally:
        copier.close()
    return copier.kept


class _Copier:
    def __init__(self, dsn: str, directory: Path, polls: Sequence[str]) -> None:
        self.dsn = dsn
        self.directory = directory
        self.polls = polls
        self.kept = len(list(directory.glob("[0-9]*.json")))
        self.before: Dump | None = load(directory)[-1] if self.kept else None
        self.seen: tuple[Any, ...] | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self.cockroach = False

    def look(self) -> None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = storage.connect(self.dsn)
                self.cockroach = storage.is_cockroach(self.conn)
            now = _fingerprint(self.conn, self.polls, self.cockroach)
            if now == self.seen:
                return
            dump = read(self.conn, self.polls)
        except psycopg.OperationalError as error:
            log.warning("cannot read the database (%s); retrying", type(error).__name__)
            self.close()
            time.sleep(1)
            return
        self.seen = now
        if self.before is None or _changed(self.before, dump):
            self.kept += 1
            write(self.directory, self.kept, dump, self.before)
            self.before = dump

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def _fingerprint(
    conn: psycopg.Connection[Any], names: Sequence[str], cockroach: bool
) -> tuple[Any, ...]:
    marker = "max(crdb_internal_mvcc_timestamp)" if cockroach else "max(xmin::text::bigint)"
    found: list[Any] = [conn.execute("SELECT name, closed FROM polls ORDER BY name").fetchall()]
    for table in TABLES:
        query = sql.SQL("SELECT count(*), {} FROM {}").format(
            sql.SQL(marker),
            sql.Identifier(table),
        )
        if names:
            query = sql.SQL("{} WHERE poll IN (SELECT uid FROM polls WHERE name = ANY(%s))").format(
                query
            )
            found.append(conn.execute(query, (list(names),)).fetchone())
        else:
            found.append(conn.execute(query).fetchone())
    return tuple(found)


def _changed(before: Dump, after: Dump) -> bool:
    if {n: p.closed for n, p in before.polls.items()} != {
        n: p.closed for n, p in after.polls.items()
    }:
        return True
    return any(before.rows.get(t) != after.rows.get(t) for t in TABLES)


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Finding(_Out):
    """What ``privpoll audit`` reports for one poll: numbers about all voters together."""

    poll: str
    choices: list[str]
    voters: int
    snapshots: int
    epoch: int
    actor_commits: int
    ballot_commits: int
    largest_posterior: float
    exposed: int
    expected_accuracy: float
    prior_accuracy: float
    accuracy: float | None = None
    prior_accuracy_on_truth: float | None = None
    epsilon_bound: float | None = None
    notes: list[str] = []


def inference(name: str, dumps: Sequence[Dump]) -> tuple[linkage.Inference, PollRules]:
    """Run the attack on one poll over a series of dumps (oldest first)."""
    found = next((d.poll(name) for d in reversed(dumps) if d.poll(name)), None)
    if found is None:
        raise LookupError(f"there is no poll named {name!r} in the database or the snapshots")
    # The stored spec has no voter list (the voters table); one of an older schema may.
    rules = PollRules.model_validate({k: v for k, v in found.spec.items() if k != "voters"})
    seen: dict[Tuple, linkage.Row] = {}
    snapshots = [d.snapshot(found.uid, seen) for d in dumps]
    return linkage.attack(snapshots, linkage.NoiseModel.of(rules)), rules


def summarize(
    name: str, result: linkage.Inference, rules: PollRules, truth: Mapping[str, str] | None = None
) -> Finding:
    p = rules.replacement_probability()
    m = len(rules.choices)
    bound = None
    if p > 0:
        odds = 1 + m * (1 - p) / p  # e^epsilon
        bound = odds / (odds + m - 1)
    return Finding(
        poll=name,
        choices=list(rules.choices),
        voters=len(result.per_voter()),
        snapshots=result.snapshots,
        epoch=result.epoch,
        actor_commits=result.actor_commits,
        ballot_commits=result.ballot_commits,
        largest_posterior=result.largest_posterior,
        exposed=result.exposed,
        expected_accuracy=result.expected_accuracy,
        prior_accuracy=result.prior_accuracy,
        accuracy=result.accuracy(truth) if truth else None,
        prior_accuracy_on_truth=result.prior_accuracy_on(truth) if truth else None,
        epsilon_bound=bound,
        notes=list(result.notes),
    )


def describe(found: Finding) -> Iterable[str]:
    """The audit as lines of text."""
    yield (
        f"poll {found.poll}: {found.voters} voters, seen in {found.snapshots} snapshot(s); "
        f"{found.actor_commits} actor and {found.ballot_commits} ballot commits told apart"
    )
    yield f"largest posterior of any voter:   {found.largest_posterior:.3f}"
    if found.epsilon_bound is not None:
        yield f"randomized response bound:        {found.epsilon_bound:.3f} (uniform prior)"
    yield f"voters exposed with certainty:    {found.exposed}"
    yield (
        f"attacker's expected accuracy:     {found.expected_accuracy:.1%} "
        f"(guessing from the results alone: {found.prior_accuracy:.1%})"
    )
    if found.accuracy is not None and found.prior_accuracy_on_truth is not None:
        yield (
            f"attacker's accuracy on the truth: {found.accuracy:.1%} "
            f"(guessing from the results alone: {found.prior_accuracy_on_truth:.1%})"
        )
    yield from found.notes
