"""The HTTP API of DESIGN.md: polls, invitations, votes and results under /api/v1."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privpoll import polls, provision, remix, storage, tokens
from privpoll.ballot_box import QueueDown
from privpoll.errors import ApiError
from privpoll.ingest import services
from privpoll.openapi import document
from privpoll.poll import Phase
from privpoll.spec import describe, problems

api = Blueprint("api", __name__)

VOTE_BODY_LIMIT = 4096


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voter: str = Field(min_length=1, max_length=200)
    token: str = Field(min_length=1, max_length=200)
    choice: str = Field(min_length=1, max_length=100)


def _json_body(limit: int | None = None) -> Any:
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if limit is not None:
        request.max_content_length = limit
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError) as error:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from error


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
    if not tokens.same_secret(services().settings.admin_token, given.strip()):
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
    stored = polls.create_poll(polls.parse_new_poll(_json_body()))
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
    found = polls.invitations(polls.stored_poll(name))
    return jsonify([{"voter": i.voter, "token": i.token, "url": i.url} for i in found])


@api.post("/api/v1/polls/<name>/votes")
def vote(name: str) -> tuple[Response, int]:
    if request.content_length is not None and request.content_length > VOTE_BODY_LIMIT:
        raise ApiError(413, "too_large", f"a vote is at most {VOTE_BODY_LIMIT} bytes")
    body = _json_body(limit=VOTE_BODY_LIMIT)
    try:
        ballot = VoteRequest.model_validate(body)
    except ValidationError as error:
        found = problems(error)
        raise ApiError(
            400, "invalid_vote", describe(found), fields=[p.model_dump() for p in found]
        ) from error
    poll = polls.open_ballot(name, ballot.voter, ballot.token)
    polls.cast(poll, ballot.voter, ballot.choice)
    return jsonify({"status": "queued"}), 202


@api.get("/api/v1/polls/<name>/results")
def results(name: str) -> Response:
    return jsonify(polls.results_of(polls.stored_poll(name), admin=_is_admin()))


@api.post("/api/v1/polls/<name>/remix")
def remix_poll(name: str) -> Response:
    """Rewrite a closed, drained poll's rows with fresh ids in one transaction, then vacuum."""
    _require_admin()
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
