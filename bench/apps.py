"""The two comparison servers of the benchmark, run under the same gunicorn configuration.

- ``ceiling()``: the web stack's ceiling: parse the JSON body, answer 202.
- ``bare()``: the same endpoint as bare WSGI, without Flask: the ceiling of what privpoll's
  vote route (privpoll.web.vote_route, which answers votes in front of Flask) runs on.
- ``naive()``: what a user would build instead: insert (voter, choice) into PostgreSQL with
  one commit per request.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

BARE_ACCEPTED = b'{"status":"queued"}'
BARE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BARE_ACCEPTED)))]
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


def bare() -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    def vote(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        if not body.get("voter") or not body.get("choice"):
            start_response("400 Bad Request", [("Content-Type", "application/json")])
            return [b'{"error": "voter and choice"}']
        start_response("202 Accepted", BARE_HEADERS)
        return [BARE_ACCEPTED]

    return vote


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
