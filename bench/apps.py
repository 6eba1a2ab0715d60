"""The two comparison servers of the benchmark, run under the same gunicorn configuration.

- ``ceiling()``: the web stack's ceiling: parse the JSON body, answer 202.
- ``naive()``: what a user would build instead: insert (voter, choice) into PostgreSQL with
  one commit per request.
"""

from __future__ import annotations

import contextlib
import json
import os

import psycopg
from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

ACCEPTED = Response('{"status":"queued"}', status=202, mimetype="application/json")


def ceiling() -> Flask:
    app = Flask("ceiling")

    @app.post("/api/v1/polls/<name>/votes")
    def vote(name: str) -> Response:
        body = json.loads(request.get_data())
        if not body.get("voter") or not body.get("choice"):
            return Response('{"error": "voter and choice"}', 400, mimetype="application/json")
        return ACCEPTED

    return app


def naive() -> Flask:
    app = Flask("naive")
    pool = ConnectionPool(
        os.environ["PRIVPOLL_DATABASE_URL"], min_size=1, max_size=16, kwargs={"autocommit": True}
    )
    # Every worker runs this at once; IF NOT EXISTS still races in PostgreSQL's catalog, and
    # the loser of that race finds the table made.
    with pool.connection() as conn, contextlib.suppress(psycopg.errors.UniqueViolation):
        conn.execute("CREATE TABLE IF NOT EXISTS naive_votes (voter text, choice text)")

    @app.post("/api/v1/polls/<name>/votes")
    def vote(name: str) -> Response:
        body = json.loads(request.get_data())
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO naive_votes (voter, choice) VALUES (%s, %s)",
                (body["voter"], body["choice"]),
            )
        return ACCEPTED

    return app
