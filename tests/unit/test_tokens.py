from __future__ import annotations

import uuid

from privpoll.core import tokens

SECRET = b"s3cret"
POLL = uuid.uuid4()


def test_token_checks_without_lookup() -> None:
    token = tokens.voter_token(SECRET, POLL, "alice")
    assert tokens.is_valid(SECRET, POLL, "alice", token)


def test_token_of_another_voter_poll_or_secret_fails() -> None:
    token = tokens.voter_token(SECRET, POLL, "alice")
    assert not tokens.is_valid(SECRET, POLL, "bob", token)
    assert not tokens.is_valid(SECRET, uuid.uuid4(), "alice", token)
    assert not tokens.is_valid(b"other", POLL, "alice", token)
    # The last character is one of 16 (its low bits are padding): change it to another.
    other = "B" if token.endswith("A") else "A"
    assert not tokens.is_valid(SECRET, POLL, "alice", token[:-1] + other)


def test_reservation_key_hides_the_voter() -> None:
    key = tokens.reservation_key(POLL, "alice")
    assert "alice" not in key
    assert key == tokens.reservation_key(POLL, "alice")
    assert key != tokens.reservation_key(uuid.uuid4(), "alice")
