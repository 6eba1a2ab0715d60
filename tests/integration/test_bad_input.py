"""Bad input against a running system: every request gets a 4xx with a clear message, never a
5xx, and nothing of it reaches the database or the queue.

Two halves: schemathesis drives every operation of /api/v1/openapi.json with generated valid
and invalid requests and holds each answer to the document (status listed, body schema,
headers); then hand-written cases a fuzzer would not think of: broken and deeply nested JSON,
huge bodies, control characters, SQL, forged and borrowed tokens, polls not open or closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from privpoll.bus import naming
from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration.conftest import ADMIN, System, fresh_database, poll_spec

VOTERS = ["alice", "bob", "carol"]
# Per operation: enough to reach every status the document lists, few enough for `make test`.
EXAMPLES = int(os.environ.get("PRIVPOLL_SCHEMATHESIS_EXAMPLES", "50"))
SQL = [
    "' OR '1'='1",
    "alice'; DROP TABLE actors; --",
    'pizza"); DELETE FROM ballots; --',
    "1; SELECT pg_sleep(10)",
    "$$; TRUNCATE polls; $$",
]


@contextlib.contextmanager
def started(root: Path, postgres: PostgresServer) -> Iterator[System]:
    """privpoll up with a NATS and a database of its own: no other test's polls in sight."""
    nats = NatsServer(root / "nats")
    nats.start()
    system = System(
        root / "system",
        nats,
        postgres,
        # Limits high enough for a test that sends many wrong tokens on purpose.
        env={"PRIVPOLL_GUESS_RATE_LIMIT": "50/s", "PRIVPOLL_SIGNIN_RATE_LIMIT": "50/s"},
        dsn=fresh_database(postgres, "badinput"),
    )
    try:
        system.start()
        yield system
    finally:
        system.stop()
        nats.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[System]:
    """One system for the hand-written cases, with polls open, not open yet, and closed."""
    with started(tmp_path_factory.mktemp("bad-input"), postgres) as system:
        system.create_poll("lunch", poll_spec(VOTERS))
        system.create_poll("other", poll_spec(VOTERS))
        later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        system.create_poll("later", poll_spec(VOTERS, schedule={"opensAt": later}))
        system.create_poll("over", poll_spec(VOTERS))
        system.close("over")
        # Closing starts the re-mix and the purge, which delete the stream and the voters
        # bucket: wait for them, so that a test's footprint sees only its own requests.
        system.wait_remixed("over")
        yield system


# -- schemathesis ----------------------------------------------------------------------------

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
]


# The run's configuration: half of the calls that read or vote name a poll that exists (the
# fuzzer's own names are unknown polls, all answered 404), and two statuses count as refusals
# besides schemathesis's list: 410 (closed) and 413 (too large).
CONFIG = """
[dictionaries.polls]
values = ["fuzz"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "410", "413", "415", "429"]

[[operations]]
include-name = [
    "POST /api/v1/polls/{name}/votes",
    "GET /api/v1/polls/{name}",
    "GET /api/v1/polls/{name}/results",
    "GET /api/v1/polls/{name}/invitations",
]
parameters = { "path.name" = { dictionary = "polls", probability = 0.5 } }

# Not ready is a 503 by design (a fresh worker still connecting to NATS, say).
[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2xx", "4xx", "503"]
"""


def test_the_api_answers_as_its_openapi_document_says(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """schemathesis's command line, bounded: a fixed seed and EXAMPLES cases per operation.

    On a system of its own: with the admin token it closes whatever polls it finds.
    """
    with started(tmp_path / "fuzz", postgres) as running:
        running.create_poll("fuzz", poll_spec(VOTERS))
        done = schemathesis(running, tmp_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-4000:]


def schemathesis(running: System, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = Path(sys.executable).parent / "schemathesis"
    return subprocess.run(
        [
            str(command), "--config-file", str(config), "run",
            f"{running.url}/api/v1/openapi.json",
            "--checks", ",".join(CHECKS),
            "--mode", "all",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(EXAMPLES),
            "--seed", "7",
            "--workers", "4",
            # The admin token on every call, so admin operations get past the door;
            # ignored_auth still sends each of them without it.
            "--header", f"Authorization: Bearer {ADMIN}",
            "--suppress-health-check", "all",
            "--generation-database", "none",
            "--request-timeout", "30",
            "--no-color",
            "--report", "junit",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip


# -- hand-written cases ----------------------------------------------------------------------


def footprint(system: System) -> dict[str, Any]:
    """What the database and NATS hold: polls, votes and ballots, every stream's messages."""
    with system.db() as conn:
        polls = conn.execute("SELECT name, spec::text, closed FROM polls ORDER BY name").fetchall()
        actors = conn.execute("SELECT count(*) FROM actors").fetchone()
        ballots = conn.execute("SELECT count(*) FROM ballots").fetchone()

    async def streams() -> dict[str, int]:
        nc = await naming.connect(system.nats.url, "test")
        try:
            return {
                s.config.name or "": s.state.messages for s in await nc.jetstream().streams_info()
            }
        finally:
            await nc.close()

    return {"polls": polls, "actors": actors, "ballots": ballots, "streams": asyncio.run(streams())}


@pytest.fixture
def unchanged(running: System) -> Iterator[None]:
    """The test's requests leave the database and the queue exactly as they were."""
    before = footprint(running)
    yield
    assert footprint(running) == before, "a refused request left something behind"


def refused(response: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    """A 4xx in the API's error shape, its message saying what was wrong."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json", response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    return error


def post(system: System, path: str, body: bytes, **headers: str) -> httpx.Response:
    return system.http.post(
        path, content=body, headers={"Content-Type": "application/json", **headers}
    )


VOTE = "/api/v1/polls/lunch/votes"
BROKEN_JSON: list[tuple[bytes, str]] = [
    (b'{"voter": "alice", ', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b'{"voter": NaN, "token": "t", "choice": "pizza"}', "not valid JSON"),
    (b'{"voter": "\\ud800", "token": "t", "choice": "pizza"}', "lone surrogate"),
    (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
]


@pytest.mark.parametrize(("body", "words"), BROKEN_JSON)
def test_broken_json_is_refused(running: System, unchanged: None, body: bytes, words: str) -> None:
    refused(post(running, VOTE, body), 400, "invalid_json", words)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    refused(post(running, "/api/v1/polls", body, **admin), 400, "invalid_json", words)


def test_deep_nesting_is_refused_wherever_it_hides(running: System, unchanged: None) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    deep = b'{"name": "deep", "spec": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    refused(post(running, "/api/v1/polls", deep, **admin), 400, "invalid_json")

    def nested(depth: int) -> dict[str, Any]:
        title: Any = "x"
        for _ in range(depth):
            title = {"a": title}
        return {"name": "deep", "spec": {**poll_spec(VOTERS), "title": title}}

    answer = running.http.post("/api/v1/polls", json=nested(50), headers=admin)
    error = refused(answer, 400, "invalid_poll", "spec.title: must be text")
    assert error["fields"] == [
        {"field": "spec.title", "message": "must be text", "code": "string_type"}
    ]
    answer = running.http.post("/api/v1/polls", json=nested(500), headers=admin)
    refused(answer, 400, "invalid_poll", "recursion limit exceeded")
    vote = {"voter": [[[["alice"]]]], "token": "t", "choice": "pizza"}
    refused(running.http.post(VOTE, json=vote), 400, "invalid_vote", "voter: must be text")


WRONG_VOTES: list[tuple[Any, str]] = [
    (None, "body: must be an object"),
    ([], "body: must be an object"),
    ("alice", "body: must be an object"),
    (42, "body: must be an object"),
    ({"voter": 5, "token": "t", "choice": "pizza"}, "voter: must be text"),
    ({"voter": "alice", "token": None, "choice": "pizza"}, "token: must not be empty"),
    ({"voter": "alice", "token": "t", "choice": ["pizza"]}, "choice: must be text"),
    ({"voter": "alice", "token": "t", "choice": True}, "choice: must be text: quote yes/no"),
    ({"voter": "alice", "token": "t"}, "choice: is required"),
    ({"voter": "alice", "token": "", "choice": "pizza"}, "token: must not be empty"),
    ({"voter": "alice", "token": "t", "choice": "pizza", "admin": True}, "admin: is not a field"),
]


@pytest.mark.parametrize(("body", "words"), WRONG_VOTES)
def test_votes_of_the_wrong_shape_are_refused(
    running: System, unchanged: None, body: Any, words: str
) -> None:
    refused(post(running, VOTE, json.dumps(body).encode()), 400, "invalid_vote", words)


def test_huge_bodies_are_refused_before_they_are_read(running: System, unchanged: None) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    big_vote = {"voter": "alice", "token": "t" * 10_000, "choice": "pizza"}
    refused(running.http.post(VOTE, json=big_vote), 413, "too_large", "at most 4,096 bytes")
    # Without a Content-Length (chunked), the limit holds while the body streams in.
    chunks = iter([b'{"voter": "', b"a" * 5000, b'", "token": "t", "choice": "pizza"}'])
    streamed = running.http.post(VOTE, content=chunks, headers={"Content-Type": "application/json"})
    refused(streamed, 413, "too_large", "a vote is at most 4,096 bytes")
    huge = json.dumps({"name": "huge", "spec": {**poll_spec(VOTERS), "title": "x" * (9 << 20)}})
    answer = post(running, "/api/v1/polls", huge.encode(), **admin)
    refused(answer, 413, "too_large", "the body is at most 8,388,608 bytes")


def test_bodies_in_broken_chunks_are_refused(running: System, unchanged: None) -> None:
    """A chunk size that is no number, as a hand-made client might send: 400, not a 500."""

    def sent(path: str, content_type: str, extra: str = "") -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as raw:
            raw.sendall(
                f"POST {path} HTTP/1.1\r\nHost: privpoll\r\n{extra}"
                f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n".encode()
            )
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        return head, body

    for path, extra in ((VOTE, ""), ("/api/v1/polls", f"Authorization: Bearer {ADMIN}\r\n")):
        _, body = sent(path, "application/json", extra)
        error = json.loads(body)["error"]
        assert error["code"] == "unreadable_body", error
        assert "valid chunks" in error["message"], error
    # A form of the web pages: the error page says the same.
    head, body = sent("/signin", "application/x-www-form-urlencoded", "Accept: text/html\r\n")
    assert b"text/html" in head
    assert b"valid chunks" in body


def test_other_media_types_are_refused(running: System, unchanged: None) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        answer = running.http.post(
            VOTE, content=b"voter=alice&choice=pizza", headers={"Content-Type": content_type}
        )
        refused(answer, 415, "unsupported_media_type", "application/json")


def test_unicode_and_control_characters_are_refused(running: System, unchanged: None) -> None:
    tokens = running.invitations("lunch")

    def vote(voter: str, token: str, choice: str, poll: str = "lunch") -> httpx.Response:
        return running.vote(quote(poll, safe=""), voter, token, choice)

    for choice in (
        "pizza\x00",
        "piz\u202eza",
        "\uff50\uff49\uff5a\uff5a\uff41",
        "🍕",
        "Pizza",
        "pizza ",
        "\u200bpizza",
    ):
        refused(vote("alice", tokens["alice"], choice), 400, "invalid_choice", repr(choice))
    for voter in ("al\x00ice", "alice\n", "\uff21\uff2c\uff29\uff23\uff25", "alice\u0301", "🙂"):
        refused(vote(voter, tokens["alice"], "pizza"), 403, "invalid_token", "not valid")
    for poll in ("lunch\x00", "lünch", "LUNCH", "lunch\n", "🍕"):
        refused(vote("alice", tokens["alice"], "pizza", poll), 404, "poll_not_found", "no poll")


def test_sql_in_every_field_is_only_ever_text(running: System, unchanged: None) -> None:
    tokens = running.invitations("lunch")
    for text in SQL:
        refused(running.vote("lunch", text, tokens["alice"], "pizza"), 403, "invalid_token")
        refused(running.vote("lunch", "alice", text, "pizza"), 403, "invalid_token")
        refused(running.vote("lunch", "alice", tokens["alice"], text), 400, "invalid_choice")
        path = quote(text, safe="")
        refused(running.vote(path, "alice", tokens["alice"], "pizza"), 404, "poll_not_found")
        refused(running.http.get(f"/api/v1/polls/{path}/results"), 404, "poll_not_found")
        forged = {"Authorization": f"Bearer {text}"}
        refused(running.http.get("/api/v1/polls", headers=forged), 403, "forbidden")
        body = {"name": text, "spec": poll_spec(VOTERS)}
        answer = running.http.post("/api/v1/polls", json=body, headers=running.admin)
        refused(answer, 400, "invalid_poll", "name: must be 1-40 lowercase letters")


def test_a_poll_made_of_sql_stores_it_verbatim(running: System) -> None:
    """Where SQL is valid text (a title, a choice, a voter id), it is stored as that text."""
    spec = poll_spec(SQL[:2], title=SQL[2], choices=SQL[3:])
    running.create_poll("sql", spec)
    tokens = running.invitations("sql")
    assert sorted(tokens) == sorted(SQL[:2])
    assert running.vote("sql", SQL[0], tokens[SQL[0]], SQL[3]).status_code == 202
    assert running.http.get("/api/v1/polls/sql").json()["spec"]["title"] == SQL[2]
    with running.db() as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
            "('polls', 'actors', 'ballots')"
        ).fetchone()
    assert tables == (3,)


def test_forged_and_borrowed_tokens_are_refused(running: System, unchanged: None) -> None:
    lunch, other = running.invitations("lunch"), running.invitations("other")
    uid = running.poll_uid("lunch")
    wrong_key = hmac.new(
        b"not the secret", bytes.fromhex(uid.replace("-", "")) + b"alice", hashlib.sha256
    )
    forgeries = {
        "random": base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode(),
        "HMAC under another key": base64.urlsafe_b64encode(wrong_key.digest())
        .rstrip(b"=")
        .decode(),
        "another poll's": other["alice"],
        "another voter's": lunch["bob"],
        "truncated": lunch["alice"][:-1],
        "padded": lunch["alice"] + "=",
        "upper case": lunch["alice"].upper(),
        "with a space": lunch["alice"] + " ",
    }
    for what, token in forgeries.items():
        answer = running.vote("lunch", "alice", token, "pizza")
        refused(answer, 403, "invalid_token", "not valid for this voter and poll"), what
    # Not even a voter of the poll, with a token of the poll.
    refused(running.vote("lunch", "mallory", lunch["alice"], "pizza"), 403, "invalid_token")


def test_admin_calls_need_the_admin_token(running: System, unchanged: None) -> None:
    body = {"name": "sneaky", "spec": poll_spec(VOTERS)}
    calls = [
        ("GET", "/api/v1/polls", None),
        ("POST", "/api/v1/polls", body),
        ("GET", "/api/v1/polls/lunch/invitations", None),
        ("POST", "/api/v1/polls/lunch/close", None),
        ("POST", "/api/v1/polls/over/remix", None),
    ]
    basic = base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    tries: list[tuple[dict[bytes, bytes], int, str]] = [
        ({}, 401, "unauthorized"),
        ({b"Authorization": f"Basic {basic}".encode()}, 401, "unauthorized"),
        ({b"Authorization": b"Bearer"}, 401, "unauthorized"),
        ({b"Authorization": f"Bearer {ADMIN}x".encode()}, 403, "forbidden"),
        ({b"Authorization": f"Bearer {ADMIN[:-1]}".encode()}, 403, "forbidden"),
        ({b"Authorization": "Bearer admin\xe9".encode("latin-1")}, 403, "forbidden"),
    ]
    for method, path, json_body in calls:
        for header, status, code in tries:
            answer = running.http.request(method, path, json=json_body, headers=header)
            error = refused(answer, status, code)
            assert "admin token" in error["message"]
            if status == 401:
                assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_votes_before_open_after_close_and_for_unknown_polls(
    running: System, unchanged: None
) -> None:
    later, over = running.invitations("later"), running.invitations("over")
    refused(
        running.vote("later", "alice", later["alice"], "pizza"), 409, "poll_not_open", "opens at"
    )
    refused(running.vote("over", "alice", over["alice"], "pizza"), 410, "poll_closed", "closed")
    refused(running.vote("nope", "alice", later["alice"], "pizza"), 404, "poll_not_found", "'nope'")
    refused(running.http.get("/api/v1/polls/nope"), 404, "poll_not_found")
    refused(running.http.get("/api/v1/polls/nope/results"), 404, "poll_not_found")
    admin = running.admin
    refused(running.http.post("/api/v1/polls/nope/close", headers=admin), 404, "poll_not_found")
    refused(
        running.http.get("/api/v1/polls/nope/invitations", headers=admin), 404, "poll_not_found"
    )


def test_wrong_methods_and_paths_get_json_errors(running: System, unchanged: None) -> None:
    answer = running.http.patch("/api/v1/polls/lunch")
    refused(answer, 405, "method_not_allowed")
    assert "GET" in answer.headers["Allow"]
    refused(running.http.put(VOTE, json={}), 405, "method_not_allowed")
    refused(running.http.get("/api/v2/polls"), 404, "not_found")


# (name, changes to a valid spec, the field the answer names, words of its message)
INVALID_POLLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("ok", {"choices": ["a"]}, "spec.choices", "needs at least 2 choices"),
    ("ok", {"choices": ["a", "a"]}, "spec.choices", "choices must be unique: 'a' appears twice"),
    ("ok", {"choices": ["a", "b\tc"]}, "spec.choices.1", "control characters"),
    ("ok", {"choices": ["a", " b"]}, "spec.choices.1", "must not start or end with spaces"),
    ("ok", {"voters": {"ids": ["x", "x"]}}, "spec.voters.ids", "voter ids must be unique"),
    ("ok", {"voters": {"ids": []}}, "spec.voters.ids", "needs at least 1 voter"),
    ("ok", {"voters": {}}, "spec.voters", "give exactly one of 'ids'"),
    ("ok", {"voters": {"configMapRef": {"name": "v"}}}, "body", "work on Kubernetes only"),
    ("ok", {"title": ""}, "spec.title", "must not be empty"),
    ("ok", {"title": "two\nlines"}, "spec.title", "control characters"),
    ("ok", {"title": 7}, "spec.title", "must be text"),
    ("ok", {"colour": "red"}, "spec.colour", "is not a field of a poll"),
    ("ok", {"duplicates": "maybe"}, "spec.duplicates", "'prevent' or 'detect'"),
    (
        "ok",
        {"noise": {"fakeVotes": {"distribution": "fixed", "count": 0, "min": 0}}},
        "spec.noise",
        "at least one fake vote",
    ),
    (
        "ok",
        {"noise": {"fakeVotes": {"distribution": "poisson", "mean": "2"}}},
        "spec.noise.fakeVotes.mean",
        "must be a number",
    ),
    (
        "ok",
        {"noise": {"choiceWeights": {"pizza": 1, "sushi": 1, "tacos": 0}}},
        "spec.noise.choiceWeights",
        "positive number",
    ),
    ("ok", {"noise": {"choiceWeights": {"pizza": 1}}}, "spec", "missing a weight for sushi, tacos"),
    (
        "ok",
        {"noise": {"randomizedResponse": {"epsilon": 0}}},
        "spec.noise.randomizedResponse.epsilon",
        "must be more than 0",
    ),
    (
        "ok",
        {"noise": {"randomizedResponse": {"epsilon": 1, "probability": 0.5}}},
        "spec.noise.randomizedResponse",
        "exactly one of",
    ),
    ("ok", {"mixing": {"minBatch": 0}}, "spec.mixing.minBatch", "must be at least 1"),
    ("ok", {"mixing": {"maxWait": "forever"}}, "spec.mixing.maxWait", "is not a duration"),
    ("ok", {"schedule": {"closesAt": "2001-01-01T00:00:00Z"}}, "body", "closesAt is in the past"),
    (
        "ok",
        {"schedule": {"closesAt": "2099-01-01T00:00:00"}},
        "spec.schedule.closesAt",
        "needs a time zone",
    ),
    (
        "ok",
        {"schedule": {"closesAt": 4102444800}},
        "spec.schedule.closesAt",
        "is not a date and time",
    ),
    (
        "ok",
        {"schedule": {"opensAt": "2099-01-02T00:00:00Z", "closesAt": "2099-01-01T00:00:00Z"}},
        "spec.schedule",
        "closesAt must be after opensAt",
    ),
    (
        "ok",
        {"results": {"visibility": "never"}},
        "spec.results.visibility",
        "'live' or 'afterClose'",
    ),
    ("Lunch", {}, "name", "must be 1-40 lowercase letters"),
    ("a" * 41, {}, "name", "must be 1-40 lowercase letters"),
    ("-lunch", {}, "name", "must be 1-40 lowercase letters"),
]


@pytest.mark.parametrize(("name", "changes", "field", "words"), INVALID_POLLS)
def test_invalid_polls_are_refused_naming_the_field(
    running: System, unchanged: None, name: str, changes: dict[str, Any], field: str, words: str
) -> None:
    body = {"name": name, "spec": {**poll_spec(VOTERS), **changes}}
    answer = running.http.post("/api/v1/polls", json=body, headers=running.admin)
    error = refused(answer, 400, "invalid_poll", words)
    assert field in [f["field"] for f in error["fields"]], error


def test_a_poll_name_in_use_is_refused(running: System, unchanged: None) -> None:
    body = {"name": "lunch", "spec": poll_spec(["someone", "else"], title="Taken")}
    answer = running.http.post("/api/v1/polls", json=body, headers=running.admin)
    refused(answer, 409, "poll_exists", "a poll named 'lunch' exists already")
