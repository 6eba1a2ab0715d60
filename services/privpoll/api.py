"""The HTTP API of DESIGN.md: polls, invitations, votes and results under /api/v1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privpoll import polls, provision, remix, storage, tokens
from privpoll.ballot_box import QueueDown
from privpoll.errors import ApiError
from privpoll.ingest import client_address, services
from privpoll.openapi import document
from privpoll.poll import Phase
from privpoll.ratelimit import retry_after
from privpoll.spec import describe, problems

api = Blueprint("api", __name__)

VOTE_BODY_LIMIT = 4096
QUEUED = b'{"status":"queued"}\n'


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voter: str = Field(min_length=1, max_length=200)
    token: str = Field(min_length=1, max_length=200)
    choice: str = Field(min_length=1, max_length=100)


def _json_body(limit: int | None = None, what: str = "the body") -> Any:
    limit = limit or current_app.config["MAX_CONTENT_LENGTH"]
    too_large = ApiError(413, "too_large", f"{what} is at most {limit:,} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    # A streamed (chunked) body has no Content-Length, and werkzeug cuts it at the limit
    # without a word: read one byte more to know.
    request.max_content_length = limit + 1
    data = request.get_data(cache=False)
    if len(data) > limit:
        raise too_large
    try:
        body = json.loads(data, parse_constant=_not_json)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from error
    try:
        # JSON may escape a lone UTF-16 surrogate (\ud800), which no UTF-8 text can hold;
        # only an escape can bring one in (raw bytes must be valid UTF-8 to parse).
        if b"\\u" in data:
            json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as error:
        raise ApiError(
            400, "invalid_json", "the body holds a lone surrogate (\\udXXX), not text"
        ) from error
    return body


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has no such numbers."""
    raise ValueError(f"{constant} is not a JSON number")


def _rate_limited(wait: float, what: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many {what} from your address; try again in {retry_after(wait)} s",
        headers={"Retry-After": retry_after(wait)},
    )


def _require_admin() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "unauthorized",
            "this call needs the admin token: send 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Guesses of the admin token count against the same limit as on the sign-in page.
    svc = services()
    wait = svc.signins.wait(client_address())
    if wait:
        raise _rate_limited(wait, "wrong admin tokens")
    if not tokens.same_secret(svc.settings.admin_token, given.strip()):
        svc.signins.spend(client_address())
        raise ApiError(403, "forbidden", "the admin token is not valid")


def _is_admin() -> bool:
    try:
        _require_admin()
    except ApiError:
        return False
    return True


@api.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks = {"nats": svc.box.connected, "database": True}
    try:
        with svc.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception:
        checks["database"] = False
    ready = all(checks.values())
    return jsonify({"ready": ready, "checks": checks}), 200 if ready else 503


@api.get("/metrics")
def metrics() -> Response:
    return Response(services().metrics.render(), mimetype="text/plain; version=0.0.4")


@api.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(document())


@api.post("/api/v1/polls")
def create_poll() -> tuple[Response, int]:
    _require_admin()
    stored = polls.create_poll(polls.parse_new_poll(_json_body(), strict=True))
    return jsonify(stored.summary()), 201


@api.get("/api/v1/polls")
def list_polls() -> Response:
    _require_admin()
    return jsonify([{**p.summary(), "turnout": polls.turnout(p)} for p in polls.all_polls()])


@api.get("/api/v1/polls/<name>")
def get_poll(name: str) -> Response:
    poll = polls.stored_poll(name)
    return jsonify({**poll.summary(), "turnout": polls.turnout(poll)})


@api.post("/api/v1/polls/<name>/close")
def close_poll(name: str) -> Response:
    _require_admin()
    closed = polls.close_poll(name)
    return jsonify({**closed.summary(), "turnout": polls.turnout(closed)})


@api.get("/api/v1/polls/<name>/invitations")
def invitations(name: str) -> Response:
    _require_admin()
    found = polls.each_invitation(polls.stored_poll(name))
    items = ({"voter": i.voter, "token": i.token, "url": i.url} for i in found)
    return Response(_json_array(items), mimetype="application/json")


def _json_array(items: Iterable[Any]) -> Iterator[bytes]:
    """A JSON array written as it is made, in chunks of about 64 KiB.

    After each chunk it lets the worker's other requests run: under gevent nothing else
    would until the whole array is made (100,000 invitations take about 2 s of CPU, in
    chunks of a few ms), and a socket that takes the chunk at once does not yield."""
    chunk = [b"["]
    size = 0
    for n, item in enumerate(items):
        part = (b"," if n else b"") + json.dumps(item).encode()
        chunk.append(part)
        size += len(part)
        if size >= 1 << 16:
            yield b"".join(chunk)
            chunk, size = [], 0
            time.sleep(0)  # gevent.sleep(0) in a gevent worker, a GIL release in gthread
    chunk.append(b"]")
    yield b"".join(chunk)


@api.post("/api/v1/polls/<name>/votes")
def vote(name: str) -> Response:
    wait = services().votes.spend(client_address())
    if wait:
        raise _rate_limited(wait, "votes")
    body = _json_body(VOTE_BODY_LIMIT, "a vote")
    try:
        ballot = VoteRequest.model_validate(body, strict=True)
    except ValidationError as error:
        found = problems(error)
        raise ApiError(
            400, "invalid_vote", describe(found), fields=[p.model_dump() for p in found]
        ) from error
    poll = polls.open_ballot(name, ballot.voter, ballot.token)
    polls.cast(poll, ballot.voter, ballot.choice)
    return Response(QUEUED, 202, mimetype="application/json")


@api.get("/api/v1/polls/<name>/results")
def results(name: str) -> Response:
    return jsonify(polls.results_of(polls.stored_poll(name), admin=_is_admin()))


@api.post("/api/v1/polls/<name>/remix")
def remix_poll(name: str) -> Response:
    """Rewrite a closed, drained poll's rows with fresh ids in one transaction, then vacuum."""
    _require_admin()
    polls.check_name(name)
    svc = services()

    async def drain() -> provision.Drain:
        return await provision.drain(await svc.box.jetstream(), name)

    with svc.pool.connection() as conn:
        poll = storage.get_poll(conn, name)
        if poll is None:
            raise ApiError(404, "poll_not_found", f"there is no poll named {name!r}")
        try:
            if poll.phase() is Phase.CLOSED and not poll.closed:
                # closesAt passed: the stream must stop taking votes before the rewrite.
                poll = svc.box.call(svc.box.close(conn, name)) or poll
            state = svc.box.call(drain())
        except QueueDown as error:
            raise ApiError(
                503,
                "queue_unavailable",
                "NATS cannot say whether the sinks drained the poll; try again in a few seconds",
                headers={"Retry-After": "5"},
            ) from error
        refused = remix.refusal(poll, state)
        if refused is not None:
            retry = {"Retry-After": "5"} if refused.retry else None
            raise ApiError(409, refused.code, str(refused), headers=retry)
        done = remix.remix(conn, poll)
    return jsonify(done.to_json())
