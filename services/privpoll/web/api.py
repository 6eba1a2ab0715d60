"""The HTTP API of docs/design.md: polls, invitations, votes and results under /api/v1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from privpoll.core import tokens
from privpoll.db import migrations
from privpoll.service import erase, polls, ratelimit, reissue
from privpoll.service import invitations as mailing
from privpoll.service.errors import ApiError
from privpoll.web import vote_route, voter_upload
from privpoll.web.context import client_address, services
from privpoll.web.openapi import document
from privpoll.web.request_body import read_json

api = Blueprint("api", __name__)

# Served by privpoll.web.vote_route in front of Flask; the rule here gives the path its 405s,
# OPTIONS and url_for.
api.add_url_rule(vote_route.RULE, "vote", methods=["POST"])


def _json_body() -> Any:
    return read_json(request.environ, current_app.config["MAX_CONTENT_LENGTH"])


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
        raise ratelimit.refused(wait, "wrong admin tokens")
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
    # Votes wait for the schema this code expects: the operator or privpoll up migrates.
    checks = {"nats": svc.box.connected, "database": True, "schema": False}
    try:
        with svc.pool.connection(timeout=2) as conn:
            checks["schema"] = migrations.is_current(conn)
    # Whatever fails here (no connection, a pool timeout, a broken one) means "not ready".
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
    if request.mimetype == voter_upload.MEDIA_TYPE:
        body, voters = voter_upload.new_poll_body(request)
        new = polls.parse_new_poll(body, strict=True, voters=voters)
    else:
        new = polls.parse_new_poll(_json_body(), strict=True)
    stored = polls.create_poll(services(), new)
    return jsonify(stored.summary()), 201


@api.get("/api/v1/polls")
def list_polls() -> Response:
    _require_admin()
    return jsonify([polls.described(services(), p) for p in polls.all_polls(services())])


@api.get("/api/v1/polls/<name>")
def get_poll(name: str) -> Response:
    poll = polls.stored_poll(services(), name)
    return jsonify(polls.described(services(), poll))


@api.post("/api/v1/polls/<name>/close")
def close_poll(name: str) -> Response:
    _require_admin()
    closed = polls.close_poll(services(), name)
    return jsonify(polls.described(services(), closed))


@api.delete("/api/v1/polls/<name>")
def delete_poll(name: str) -> Response:
    """Erase a poll: rows, queue, and on Kubernetes the Poll resource; says what went."""
    _require_admin()
    return jsonify(erase.delete_poll(services(), name).to_json())


@api.post("/api/v1/polls/<name>/voters/<path:voter>/reissue")
def reissue_link(name: str, voter: str) -> Response:
    """A new link for one voter; the old one stops working."""
    _require_admin()
    found = reissue.reissue(services(), name, voter)
    return jsonify({"voter": found.voter, "token": found.token, "url": found.url})


@api.post("/api/v1/polls/<name>/invitations/send")
def send_invitations(name: str) -> tuple[Response, int]:
    """E-mail every voter whose id is an address their link, in the background."""
    _require_admin()
    again = request.args.get("again", "false")
    if again not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", "again must be true or false")
    return jsonify(mailing.send_invitations(services(), name, again=again == "true").to_json()), 202


@api.post("/api/v1/polls/<name>/reminders")
def send_reminders(name: str) -> tuple[Response, int]:
    """E-mail a reminder to every voter with an address who has not voted."""
    _require_admin()
    return jsonify({"queued": mailing.send_reminders(services(), name)}), 202


@api.get("/api/v1/polls/<name>/mail")
def mail_progress(name: str) -> Response:
    """How far the invitations and reminders are, with each address that failed."""
    _require_admin()
    return jsonify(mailing.progress(services(), name))


@api.get("/api/v1/polls/<name>/invitations")
def invitations(name: str) -> Response:
    _require_admin()
    found = polls.each_invitation(services(), polls.stored_poll(services(), name))
    # What json.dumps writes of {"voter", "token", "url"}, without its general path: a
    # million voters' invitations stream at the speed of making them.
    text = json.encoder.encode_basestring_ascii
    items = (
        f'{{"voter": {text(i.voter)}, "token": {text(i.token)}, "url": {text(i.url)}}}'.encode()
        for i in found
    )
    return Response(_json_array(items, encoded=True), mimetype="application/json")


def _json_array(items: Iterable[Any], *, encoded: bool = False) -> Iterator[bytes]:
    """A JSON array written as it is made, in chunks of about 64 KiB.

    After each chunk it lets the worker's other requests run: under gevent nothing else
    would until the whole array is made (a poll of many voters takes seconds of CPU, in
    chunks of a few ms), and a socket that takes the chunk at once does not yield."""
    chunk = [b"["]
    size = 0
    for n, item in enumerate(items):
        part = (b"," if n else b"") + (item if encoded else json.dumps(item).encode())
        chunk.append(part)
        size += len(part)
        if size >= 1 << 16:
            yield b"".join(chunk)
            chunk, size = [], 0
            time.sleep(0)  # gevent.sleep(0) in a gevent worker, a GIL release in gthread
    chunk.append(b"]")
    yield b"".join(chunk)


@api.get("/api/v1/polls/<name>/results")
def results(name: str) -> Response:
    return jsonify(
        polls.results_of(services(), polls.stored_poll(services(), name), admin=_is_admin())
    )


@api.post("/api/v1/polls/<name>/remix")
def remix_poll(name: str) -> Response:
    """Rewrite a closed, drained poll's rows with fresh ids in one transaction, then vacuum."""
    _require_admin()
    return jsonify(polls.remix_poll(services(), name).to_json())
