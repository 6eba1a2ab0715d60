"""``POST /api/v1/polls/<name>/votes`` as bare WSGI, in front of the Flask app.

A vote is the one request that comes by the thousand, and Flask's machinery around a view
(the request context and its ``Request``, URL matching, the session interface, the
``Response`` object and the after-request hooks) cost about as much CPU as the vote's own
checks (``make bench`` measures a trivial endpoint both ways: docs/benchmarks.md). This
callable answers that route itself, with the same checks, the same JSON errors and the same
headers as the rest of the API; every other request goes on to Flask, whose URL map keeps
the route (for 405s, OPTIONS and ``url_for``).
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from flask import Flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privpoll.core.spec import describe, problems
from privpoll.service import polls, ratelimit
from privpoll.service.errors import INTERNAL, ApiError, stack_of
from privpoll.service.services import Services
from privpoll.web.pages import SECURITY_HEADERS
from privpoll.web.request_body import StartResponse, WsgiApp, read_json

log = logging.getLogger(__name__)

RULE = "/api/v1/polls/<name>/votes"
PATH = re.compile(r"/api/v1/polls/([^/]+)/votes")
BODY_LIMIT = 4096
QUEUED = b'{"status":"queued"}\n'


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voter: str = Field(min_length=1, max_length=200)
    token: str = Field(min_length=1, max_length=200)
    choice: str = Field(min_length=1, max_length=100)


class VoteRoute:
    """The WSGI app of the ingest: votes answered here, everything else by ``following``."""

    def __init__(self, app: Flask, following: WsgiApp) -> None:
        self.app = app
        self.following = following
        self.services: Services = app.extensions["privpoll"]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        found = PATH.fullmatch(environ.get("PATH_INFO", ""))
        if found is None or environ.get("REQUEST_METHOD") != "POST":
            return self.following(environ, start_response)
        # As werkzeug reads a path: WSGI hands it over as latin-1 text of the UTF-8 bytes.
        name = found.group(1).encode("latin-1").decode("utf-8", "replace")
        status, body, headers = 202, QUEUED, [("Content-Type", "application/json")]
        try:
            self._vote(environ, name)
        except ApiError as error:
            self.services.metrics.count("privpoll_api_errors_total", code=error.code)
            status, body = error.status, _json(error.body())
            headers.extend(error.headers.items())
        # Anything else is a bug of ours: a 500 with its stack in the log, as Flask's does.
        except Exception as error:
            log.error(
                "unexpected %s on POST %s\n%s",
                type(error).__name__,
                environ.get("PATH_INFO"),
                stack_of(error),
            )
            status = 500
            body = _json(INTERNAL)
        headers.extend(SECURITY_HEADERS)
        headers.append(("Cache-Control", "no-store"))
        headers.append(("Content-Length", str(len(body))))
        phrase = http.HTTPStatus(status).phrase
        start_response(f"{status} {phrase}", headers)
        return [body]

    def _vote(self, environ: dict[str, Any], name: str) -> None:
        """Check and queue one vote; an ApiError says why not."""
        wait = self.services.votes.spend(environ.get("REMOTE_ADDR") or "unknown")
        if wait:
            raise ratelimit.refused(wait, "votes")
        body = read_json(environ, BODY_LIMIT, "a vote")
        try:
            ballot = VoteRequest.model_validate(body, strict=True)
        except ValidationError as error:
            found = problems(error)
            raise ApiError(
                400, "invalid_vote", describe(found), fields=[p.model_dump() for p in found]
            ) from error
        poll = polls.open_ballot(self.services, name, ballot.voter, ballot.token)
        polls.cast(self.services, poll, ballot.voter, ballot.choice)


def _json(value: Any) -> bytes:
    """JSON as Flask's ``jsonify`` writes it."""
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"
