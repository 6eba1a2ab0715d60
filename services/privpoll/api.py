"""The HTTP API of DESIGN.md: polls, invitations, votes and results under /api/v1."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privpoll import randomness, storage, tokens
from privpoll.ballot_box import AlreadyVoted, PollClosed, QueueDown
from privpoll.errors import ApiError
from privpoll.ingest import services
from privpoll.openapi import document
from privpoll.poll import Phase, Poll
from privpoll.results import summarize
from privpoll.spec import NewPoll, describe, problems

api = Blueprint("api", __name__)

VOTE_BODY_LIMIT = 4096
RETRY_AFTER = "5"


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


def _stored_poll(name: str) -> Poll:
    with services().pool.connection() as conn:
        poll = storage.get_poll(conn, name)
    if poll is None:
        raise ApiError(404, "poll_not_found", f"there is no poll named {name!r}")
    return poll


def _queue_down() -> ApiError:
    return ApiError(
        503,
        "queue_unavailable",
        "votes cannot be queued right now; try again in a few seconds",
        headers={"Retry-After": RETRY_AFTER},
    )


def _turnout(poll: Poll) -> dict[str, int]:
    with services().pool.connection() as conn:
        votes, voters, _ = storage.tally(conn, poll.uid)
    return {"eligible": poll.eligible, "voters": voters, "votes": votes}


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
    body = _json_body()
    try:
        new = NewPoll.model_validate(body)
    except ValidationError as error:
        found = problems(error)
        raise ApiError(
            400,
            "invalid_poll",
            describe(found),
            fields=[p.model_dump() for p in found],
        ) from error
    svc = services()
    poll = Poll(
        name=new.name,
        uid=randomness.new_id(),
        rules=new.spec.rules(),
        eligible=len(new.spec.voters.listed),
    )
    try:
        with svc.pool.connection() as conn:
            stored = svc.box.call(svc.box.provision(conn, poll, new.spec))
    except QueueDown as error:
        raise _queue_down() from error
    if stored.uid != poll.uid:
        raise ApiError(409, "poll_exists", f"a poll named {new.name!r} exists already")
    return jsonify(stored.summary()), 201


@api.get("/api/v1/polls")
def list_polls() -> Response:
    _require_admin()
    with services().pool.connection() as conn:
        polls = storage.list_polls(conn)
    return jsonify([{**p.summary(), "turnout": _turnout(p)} for p in polls])


@api.get("/api/v1/polls/<name>")
def get_poll(name: str) -> Response:
    poll = _stored_poll(name)
    return jsonify({**poll.summary(), "turnout": _turnout(poll)})


@api.post("/api/v1/polls/<name>/close")
def close_poll(name: str) -> Response:
    _require_admin()
    _stored_poll(name)
    svc = services()
    try:
        with svc.pool.connection() as conn:
            closed = svc.box.call(svc.box.close(conn, name))
    except QueueDown as error:
        raise _queue_down() from error
    if closed is None:
        raise ApiError(404, "poll_not_found", f"there is no poll named {name!r}")
    return jsonify({**closed.summary(), "turnout": _turnout(closed)})


@api.get("/api/v1/polls/<name>/invitations")
def invitations(name: str) -> Response:
    _require_admin()
    poll = _stored_poll(name)
    svc = services()
    with svc.pool.connection() as conn:
        voters = storage.voter_ids(conn, name)
    base = svc.settings.base_url
    out = []
    for voter in voters:
        token = tokens.voter_token(svc.settings.secret_bytes, poll.uid, voter)
        url = f"{base}/vote/{name}?voter={quote(voter, safe='')}&token={token}"
        out.append({"voter": voter, "token": token, "url": url})
    return jsonify(out)


@api.post("/api/v1/polls/<name>/votes")
def vote(name: str) -> tuple[Response, int]:
    svc = services()
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
    try:
        poll = svc.box.call(svc.box.poll(name))
    except QueueDown as error:
        raise _queue_down() from error
    if poll is None:
        raise ApiError(404, "poll_not_found", f"there is no poll named {name!r}")
    phase = poll.phase()
    if phase is Phase.CLOSED:
        raise ApiError(410, "poll_closed", "this poll is closed; votes are no longer taken")
    if phase is Phase.PENDING:
        opens = poll.rules.schedule.opens_at
        raise ApiError(409, "poll_not_open", f"this poll opens at {opens:%Y-%m-%d %H:%M %Z}")
    if not tokens.is_valid(svc.settings.secret_bytes, poll.uid, ballot.voter, ballot.token):
        raise ApiError(
            403, "invalid_token", "this invitation token is not valid for this voter and poll"
        )
    if ballot.choice not in poll.rules.choices:
        raise ApiError(
            400,
            "invalid_choice",
            f"choice {ballot.choice!r} is not one of {', '.join(poll.rules.choices)}",
        )
    try:
        svc.box.call(svc.box.cast(poll, ballot.voter, ballot.choice))
    except AlreadyVoted as error:
        raise ApiError(409, "already_voted", "this invitation has been used to vote") from error
    except PollClosed as error:
        raise ApiError(410, "poll_closed", "this poll is closed; votes are no longer taken") from (
            error
        )
    except QueueDown as error:
        raise _queue_down() from error
    svc.metrics.count("privpoll_votes_accepted_total")
    return jsonify({"status": "queued"}), 202


@api.get("/api/v1/polls/<name>/results")
def results(name: str) -> Response:
    poll = _stored_poll(name)
    phase = poll.phase()
    hidden = poll.rules.results.visibility == "afterClose" and phase is not Phase.CLOSED
    if hidden and not _is_admin():
        raise ApiError(
            403,
            "results_not_public_yet",
            "this poll shows its results after it closes (the admin token sees them now)",
        )
    with services().pool.connection() as conn:
        votes, voters, stored = storage.tally(conn, poll.uid)
    return jsonify(summarize(poll.rules, phase.value, votes, voters, stored))
