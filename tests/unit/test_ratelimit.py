"""Rate limits: the token bucket, and the ingest's 429s through Flask's test client.

The limits act before anything reaches NATS or PostgreSQL, so no server runs here.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from privpoll.service.ratelimit import Limiter
from privpoll.settings import Rate, Settings
from privpoll.web.app import create_app

ADMIN = "unit-admin-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_read_as_people_write_them() -> None:
    assert Rate.parse("60/m") == Rate(60, 60.0)
    assert Rate.parse(" 5 / s ") == Rate(5, 1.0)
    assert Rate.parse("100/h") == Rate(100, 3600.0)
    for off in ("off", "OFF", "0", ""):
        assert Rate.parse(off) is None
    for wrong in ("5 per s", "0/m", "-1/s", "1.5/s", "60/d"):
        with pytest.raises(ValueError, match=r"is not a rate: write e\.g\. 60/m"):
            Rate.parse(wrong)


def test_a_wrong_rate_in_the_environment_is_named_at_start() -> None:
    with pytest.raises(ValueError, match="'lots' is not a rate"):
        Settings.from_env({"PRIVPOLL_VOTE_RATE_LIMIT": "lots"})


def test_the_bucket_allows_a_burst_then_refills_evenly() -> None:
    clock = Clock()
    limiter = Limiter(Rate(3, 60.0), clock=clock)
    assert [limiter.spend("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.spend("a") == pytest.approx(20.0)
    assert limiter.spend("b") == 0.0, "another address has its own bucket"
    clock.now += 10
    assert limiter.wait("a") == pytest.approx(10.0)
    clock.now += 10
    assert limiter.wait("a") == 0.0
    assert limiter.spend("a") == 0.0
    assert limiter.spend("a") == pytest.approx(20.0)
    clock.now += 3600
    assert [limiter.spend("a") for _ in range(4)][-1] > 0, "a long pause refills to 3, not more"


def test_wait_spends_nothing_and_off_means_no_limit() -> None:
    limiter = Limiter(Rate(1, 60.0), clock=Clock())
    assert [limiter.wait("a") for _ in range(5)] == [0.0] * 5
    assert Limiter(None).spend("a") == 0.0


def test_a_flood_of_addresses_costs_bounded_memory() -> None:
    limiter = Limiter(Rate(1, 60.0), clients=100, clock=Clock())
    for i in range(10_000):
        limiter.spend(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


# -- the ingest ------------------------------------------------------------------------------


def app(**changes: object) -> Flask:
    settings = Settings(
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql://127.0.0.1:1/none",
        admin_token=ADMIN,
        secret="unit-secret",
    )
    return create_app(settings.model_copy(update=changes))


def csrf(client: FlaskClient, address: str = "127.0.0.1") -> str:
    page = client.get("/signin", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def sign_in(client: FlaskClient, token: str, address: str = "127.0.0.1") -> int:
    form = {"csrf": csrf(client, address), "token": token}
    return client.post("/signin", data=form, environ_base={"REMOTE_ADDR": address}).status_code


def test_wrong_admin_tokens_are_limited_on_the_page_and_the_api_alike() -> None:
    client = app(signin_rate_limit="3/m").test_client()
    assert [sign_in(client, "guess") for _ in range(2)] == [400, 400]
    api = client.get("/api/v1/polls", headers={"Authorization": "Bearer guess"})
    assert api.status_code == 403
    # The limit is spent: even the right token waits, or guessing would still pay off.
    page = client.post("/signin", data={"csrf": csrf(client), "token": ADMIN})
    assert page.status_code == 429
    assert int(page.headers["Retry-After"]) >= 1
    assert "Too many tries from your address" in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"]
    api = client.get("/api/v1/polls", headers={"Authorization": f"Bearer {ADMIN}"})
    assert api.status_code == 429
    assert api.json == {
        "error": {
            "code": "rate_limited",
            "message": f"too many wrong admin tokens from your address; try again in "
            f"{api.headers['Retry-After']} s",
        }
    }
    assert sign_in(client, ADMIN, address="10.1.2.3") == 303, "another address signs in"


def test_signing_in_right_spends_nothing() -> None:
    one = app(signin_rate_limit="1/h")
    assert [sign_in(one.test_client(), ADMIN) for _ in range(5)] == [303] * 5


def test_votes_are_limited_per_address_before_anything_else() -> None:
    client = app(vote_rate_limit="2/m").test_client()

    def vote(address: str = "127.0.0.1") -> int:
        answer = client.post(
            "/api/v1/polls/lunch/votes", data="x", environ_base={"REMOTE_ADDR": address}
        )
        return answer.status_code

    assert [vote(), vote()] == [415, 415]
    assert vote() == 429
    assert vote("10.1.2.3") == 415
    form = client.post("/vote/lunch", data={"csrf": csrf(client)})
    assert form.status_code == 429, "the voting page shares the vote endpoint's limit"
    assert form.headers["Retry-After"] == "30"


def test_behind_a_proxy_the_forwarded_address_counts() -> None:
    def votes(proxy_hops: int) -> list[int]:
        client = app(vote_rate_limit="1/m", proxy_hops=proxy_hops).test_client()
        return [
            client.post(
                "/api/v1/polls/lunch/votes", data="x", headers={"X-Forwarded-For": f"10.0.0.{i}"}
            ).status_code
            for i in range(3)
        ]

    assert votes(proxy_hops=1) == [415, 415, 415]
    assert votes(proxy_hops=0) == [415, 429, 429], "without a trusted proxy the header is ignored"


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/signin", "text/html"),
        ("/nowhere", "text/html"),
        ("/api/v1/nowhere", "application/json"),
        ("/healthz", "application/json"),
    ],
)
def test_every_response_carries_the_security_headers(path: str, accept: str) -> None:
    response = app().test_client().get(path, headers={"Accept": accept})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    # Nothing from another site: every source is 'self', 'none' or an inline image.
    sources = {word for rule in csp.split(";") for word in rule.split()[1:]}
    assert sources <= {"'self'", "'none'", "data:"}, sources


def test_votes_answer_with_the_api_s_headers_and_errors() -> None:
    """Votes are answered in front of Flask (privpoll.web.vote_route): same headers, same JSON."""
    client = app().test_client()
    vote = client.post("/api/v1/polls/lunch/votes", data="x", content_type="text/plain")
    other = client.get("/api/v1/nowhere")
    assert vote.status_code == 415
    assert vote.json == {
        "error": {"code": "unsupported_media_type", "message": "send the body as application/json"}
    }
    for header in (
        "Content-Type",
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Cache-Control",
    ):
        assert vote.headers[header] == other.headers[header], header
    assert int(vote.headers["Content-Length"]) == len(vote.data)
    wrong = client.put("/api/v1/polls/lunch/votes", json={})
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert client.options("/api/v1/polls/lunch/votes").status_code == 200
    assert client.post("/api/v1/polls/lunch/votes/", json={}).status_code == 404
