"""Two common ways to store a secret vote, for comparison with privpoll. Not privpoll.

(a) ``single``: one table (voter, choice), one commit per vote: what a naive app does.
(b) ``limesurvey``: LimeSurvey's anonymized survey: a token table listing the voters, marked
    completed (no date) when they vote, and a responses table with an auto-increment id and
    no voter column; the vote's response row and the token update are one commit.

Both run the same workload as privpoll (the same voters, choices and order) against the same
PostgreSQL, and are read the way ``privpoll audit`` reads privpoll's tables: every row with its
``xmin``, a snapshot after every commit. Each design lives in its own schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg import sql

from privpoll.audit import linkage

Design = Literal["single", "limesurvey"]
DESIGNS: tuple[Design, Design] = ("single", "limesurvey")

_SCHEMA: dict[Design, list[str]] = {
    "single": [
        "CREATE TABLE {s}.votes (id serial PRIMARY KEY, voter text NOT NULL, choice text NOT NULL)"
    ],
    "limesurvey": [
        "CREATE TABLE {s}.tokens (tid serial PRIMARY KEY, voter text NOT NULL UNIQUE, "
        "completed text NOT NULL DEFAULT 'N')",
        # LimeSurvey stores 1980-01-01 as every submit date of an anonymized survey.
        "CREATE TABLE {s}.responses (id serial PRIMARY KEY, "
        "submitdate timestamp NOT NULL DEFAULT '1980-01-01', choice text NOT NULL)",
    ],
}

_READ: dict[Design, tuple[str, str]] = {
    "single": (
        "SELECT id::text, voter, xmin::text FROM {s}.votes",
        "SELECT id::text, choice, xmin::text FROM {s}.votes",
    ),
    "limesurvey": (
        "SELECT tid::text, voter, xmin::text FROM {s}.tokens WHERE completed = 'Y'",
        "SELECT id::text, choice, xmin::text FROM {s}.responses",
    ),
}


def _q(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(s=sql.Identifier(schema))


def prepare(
    conn: psycopg.Connection[Any], design: Design, schema: str, voters: Sequence[str]
) -> None:
    """A fresh schema with the design's tables (and, for LimeSurvey, the token list)."""
    with conn.transaction():
        conn.execute(_q("DROP SCHEMA IF EXISTS {s} CASCADE", schema))
        conn.execute(_q("CREATE SCHEMA {s}", schema))
        for statement in _SCHEMA[design]:
            conn.execute(_q(statement, schema))
        if design == "limesurvey":
            with conn.cursor() as cur:
                cur.executemany(
                    _q("INSERT INTO {s}.tokens (voter) VALUES (%s)", schema),
                    [(v,) for v in voters],
                )


def cast(
    conn: psycopg.Connection[Any], design: Design, schema: str, voter: str, choice: str
) -> None:
    """One vote, one commit."""
    with conn.transaction():
        if design == "single":
            conn.execute(
                _q("INSERT INTO {s}.votes (voter, choice) VALUES (%s, %s)", schema), (voter, choice)
            )
        else:
            conn.execute(_q("INSERT INTO {s}.responses (choice) VALUES (%s)", schema), (choice,))
            conn.execute(
                _q("UPDATE {s}.tokens SET completed = 'Y' WHERE voter = %s", schema), (voter,)
            )


class Reader:
    """Reads a design's tables as the attacker's rows, sharing rows between snapshots."""

    def __init__(self, conn: psycopg.Connection[Any], design: Design, schema: str) -> None:
        self.conn = conn
        self.queries = tuple(_q(q, schema) for q in _READ[design])
        self._seen: dict[tuple[str, str, int], linkage.Row] = {}

    def snapshot(self, *, closed: bool = False) -> linkage.Snapshot:
        tables = []
        for query in self.queries:
            rows = []
            for key, value, xmin in self.conn.execute(query).fetchall():
                item = (str(key), str(value), int(xmin))
                row = self._seen.get(item)
                if row is None:
                    row = self._seen[item] = linkage.Row(*item)
                rows.append(row)
            tables.append(tuple(rows))
        return linkage.Snapshot(tables[0], tables[1], closed=closed)


def run(
    conn: psycopg.Connection[Any],
    design: Design,
    schema: str,
    voters: Sequence[str],
    votes: Sequence[tuple[str, str]],
) -> list[linkage.Snapshot]:
    """Cast ``votes`` (voter, choice) in order, one commit each; a snapshot after every one."""
    prepare(conn, design, schema, voters)
    reader = Reader(conn, design, schema)
    snapshots = [reader.snapshot()]
    for voter, choice in votes:
        cast(conn, design, schema, voter, choice)
        snapshots.append(reader.snapshot())
    last = snapshots[-1]
    snapshots[-1] = linkage.Snapshot(last.actors, last.ballots, closed=True)
    return snapshots
