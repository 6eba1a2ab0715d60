"""Security of a running system: no secret in any log, metrics that name nobody, and the
rate limit answering 429 with Retry-After from the real server."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration.conftest import ADMIN, CHOICES, System, poll_spec
from tests.integration.test_pipeline import check_logs_never_join_voters_to_choices

VOTERS = [f"voter-{i:04d}" for i in range(12)]
SECRET = f"hmac-{secrets.token_urlsafe(24)}"


@pytest.fixture
def guarded(tmp_path: Path, nats: NatsServer, postgres: PostgresServer) -> Iterator[System]:
    """One worker (its limits are the whole server's), everything logged at DEBUG."""
    running = System(
        tmp_path / "system",
        nats,
        postgres,
        env={
            "PRIVPOLL_SECRET": SECRET,
            "PRIVPOLL_LOG_LEVEL": "DEBUG",
            "PRIVPOLL_INGEST_WORKERS": "1",
            "PRIVPOLL_VOTE_RATE_LIMIT": "40/h",
            "PRIVPOLL_SIGNIN_RATE_LIMIT": "5/m",
        },
    )
    running.start()
    yield running
    running.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found[1]


def test_no_log_holds_a_secret_and_metrics_name_nobody(guarded: System) -> None:
    system = guarded
    system.create_poll("guard", poll_spec(VOTERS))
    tokens = system.invitations("guard")
    # The creator signs in on the pages (once wrong), and a stranger guesses on the API.
    browser = httpx.Client(base_url=system.url, timeout=30, follow_redirects=False)
    token = csrf_of(browser.get("/signin").text)
    assert browser.post("/signin", data={"csrf": token, "token": "guess"}).status_code == 400
    assert browser.post("/signin", data={"csrf": token, "token": ADMIN}).status_code == 303
    assert browser.get("/polls/guard").status_code == 200
    assert browser.get("/polls/guard/invitations.csv").status_code == 200
    guess = {"Authorization": f"Bearer {ADMIN[:-2]}"}
    assert system.http.get("/api/v1/polls", headers=guess).status_code == 403
    # Votes through the API and through the voting page, some refused.
    for i, voter in enumerate(VOTERS[:6]):
        answer = system.vote("guard", voter, tokens[voter], CHOICES[i % 3])
        assert answer.status_code == 202, answer.text
    assert system.vote("guard", VOTERS[0], tokens[VOTERS[0]], "pizza").status_code == 409
    assert system.vote("guard", VOTERS[6], tokens[VOTERS[7]], "pizza").status_code == 403
    voter = VOTERS[6]
    page = browser.get("/vote/guard", params={"voter": voter, "token": tokens[voter]})
    assert page.status_code == 200
    form = {"csrf": csrf_of(page.text), "voter": voter, "token": tokens[voter], "choice": "sushi"}
    assert browser.post("/vote/guard", data=form).status_code == 303
    system.results("guard")
    system.close("guard")
    metrics = system.http.get("/metrics").text
    session = browser.cookies.get("privpoll_session")
    assert session

    lines = system.logs()
    assert any("POST /api/v1/polls/guard/votes" in line for line in lines), "the run was logged"
    secrets_of_the_run = {"admin token": ADMIN, "HMAC key": SECRET, "session cookie": session}
    secrets_of_the_run |= {f"token of {v}": t for v, t in tokens.items()}
    for what, value in secrets_of_the_run.items():
        assert not [line for line in lines if value in line], f"the {what} is in a log"
    check_logs_never_join_voters_to_choices(system)
    assert "privpoll_votes_accepted_total" in metrics
    for word in [*VOTERS, *CHOICES, *tokens.values()]:
        assert word not in metrics, f"/metrics names {word}"


def test_votes_past_the_limit_get_429_with_retry_after(guarded: System) -> None:
    system = guarded
    system.create_poll("flood", poll_spec(VOTERS))
    tokens = system.invitations("flood")
    answers = [system.vote("flood", v, tokens[v], "pizza") for v in VOTERS]
    statuses = [a.status_code for a in answers]
    assert statuses == [202] * 12, statuses
    # The bucket holds 40 (and refills one every 90 s): 28 left; then the burst is refused.
    burst = [system.vote("flood", VOTERS[0], "forged", "pizza") for _ in range(32)]
    assert [a.status_code for a in burst] == [403] * 28 + [429] * 4
    refused = burst[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 90
    # From another address (all of 127/8 is this machine) the door is open.
    other = httpx.Client(
        base_url=system.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    answer = other.post(
        "/api/v1/polls/flood/votes",
        json={"voter": VOTERS[0], "token": "forged", "choice": "pizza"},
    )
    assert answer.status_code == 403
