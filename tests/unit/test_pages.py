"""The pages' session, CSRF and sign-in rules, through Flask's test client (no servers).

Nothing here reaches NATS or PostgreSQL: the app opens its connections on first use, and
these pages do not use them.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from privpoll.settings import Settings
from privpoll.web.app import create_app

ADMIN = "unit-admin-token"


def app(**changes: str) -> Flask:
    settings = Settings(
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql://127.0.0.1:1/none",
        admin_token=ADMIN,
        secret="unit-secret",
    )
    return create_app(settings.model_copy(update=changes))


def csrf(client: FlaskClient, path: str = "/signin") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def signed_in(client: FlaskClient) -> None:
    response = client.post(
        "/signin", data={"csrf": csrf(client), "token": ADMIN, "next": "/polls/new"}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/polls/new"


@pytest.mark.parametrize("path", ["/polls", "/polls/new", "/polls/x", "/polls/x/invitations.csv"])
def test_admin_pages_send_strangers_to_sign_in(path: str) -> None:
    response = app().test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/signin?next={path}"


def test_the_session_cookie_is_httponly_lax_and_secure_behind_tls() -> None:
    plain = app().test_client().get("/signin").headers["Set-Cookie"]
    assert "HttpOnly" in plain
    assert "SameSite=Lax" in plain
    assert "Secure" not in plain
    tls = app(public_url="https://polls.example.org").test_client().get("/signin")
    assert "Secure" in tls.headers["Set-Cookie"]


def test_sign_in_needs_the_form_token_and_the_admin_token() -> None:
    client = app().test_client()
    assert client.post("/signin", data={"token": ADMIN}).status_code == 403
    wrong = client.post("/signin", data={"csrf": csrf(client), "token": "guess"})
    assert wrong.status_code == 400
    assert "not the admin token" in wrong.get_data(as_text=True)
    signed_in(client)
    assert client.get("/polls/new").status_code == 200


def test_every_post_without_the_form_token_is_refused() -> None:
    client = app().test_client()
    signed_in(client)
    for path in ("/polls/new", "/polls/x/close", "/signout", "/vote/x"):
        for data in ({}, {"csrf": "forged"}):
            response = client.post(path, data=data)
            assert response.status_code == 403, path
            assert "This form was refused" in response.get_data(as_text=True)
    assert client.get("/polls/new").status_code == 200, "still signed in"


def test_signing_out_ends_the_session() -> None:
    client = app().test_client()
    signed_in(client)
    token = csrf(client, "/polls/new")
    assert client.post("/signout", data={"csrf": token}).status_code == 303
    assert client.get("/polls/new").status_code == 302


def test_a_new_admin_token_signs_every_session_out() -> None:
    client = app().test_client()
    signed_in(client)
    cookie = client.get_cookie("privpoll_session")
    assert cookie is not None
    other = app(admin_token="rotated").test_client()
    other.set_cookie("privpoll_session", cookie.value)
    assert other.get("/polls/new").status_code == 302


def test_sign_in_only_sends_people_on_to_this_site() -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        client = app().test_client()
        response = client.post(
            "/signin", data={"csrf": csrf(client), "token": ADMIN, "next": target}
        )
        assert response.headers["Location"] == "/polls"


def test_the_form_round_trips_without_javascript() -> None:
    client = app().test_client()
    signed_in(client)
    token = csrf(client, "/polls/new")
    fields = {"csrf": token, "title": "Lunch", "choice": ["pizza", "sushi"], "voters": "a\nb"}
    added = client.post("/polls/new", data={**fields, "action": "add-choice"})
    assert added.status_code == 200
    assert added.get_data(as_text=True).count('name="choice"') == 3
    empty = client.post("/polls/new", data={**fields, "title": "", "action": "create"})
    assert empty.status_code == 400
    page = empty.get_data(as_text=True)
    assert re.search(r'id="title-error">\s*<p>String should have at least 1 character', page)
    assert 'value="pizza"' in page


def test_pages_forbid_framing_referrers_and_outside_assets() -> None:
    response = app().test_client().get("/signin")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_browsers_get_an_html_404_and_programs_json() -> None:
    client = app().test_client()
    page = client.get("/nowhere", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert client.get("/nowhere").mimetype == "application/json"
    assert client.get("/api/v1/nowhere", headers={"Accept": "text/html"}).is_json


def test_static_assets_are_served() -> None:
    client = app().test_client()
    assert client.get("/static/privpoll.css").status_code == 200
    assert client.get("/static/privpoll.js").status_code == 200
