from __future__ import annotations

import uuid

from privpoll.core import tokens

SECRET = b"s3cret"
POLL = uuid.uuid4()

# Known answers, computed once by hand with the standard library only, never with privpoll:
#   mac = hmac.new(KNOWN_SECRET, KNOWN_POLL.bytes + voter.encode(), hashlib.sha256).digest()
#   token = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
# where KNOWN_POLL.bytes is 12345678 1234 4678 9abc 123456789abc (16 bytes, big-endian).
KNOWN_SECRET = b"privpoll known-answer secret"
KNOWN_POLL = uuid.UUID("12345678-1234-4678-9abc-123456789abc")
KNOWN_TOKENS = {
    "alice": "4ru_f9PKxrtDNcjGi8GEXZ57dy0IRwFgktnE0A1NfWw",
    "Alice": "pjnNdjxrfcapl9TEcB0S1JywOBZ9_ERKqCXIfrxHS68",
    "alice ": "IpDqP5Xm4UQJMN_-DUoFNcT1jJ4mkyDvYdMFraT1-1Q",
    "zoë": "zvl2IDbsZusESQ3ShFjymhlzXRGlX1AOR7lZA9Wb1HQ",  # UTF-8 bytes of the id
}


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


def test_a_fixed_secret_poll_and_voter_give_a_fixed_token() -> None:
    """A token sent in an invitation must still open the poll after an upgrade: the HMAC's
    input (poll uid bytes, then the voter id's UTF-8 bytes, nothing else) never changes."""
    for voter, token in KNOWN_TOKENS.items():
        assert tokens.voter_token(KNOWN_SECRET, KNOWN_POLL, voter) == token, voter
        assert tokens.is_valid(KNOWN_SECRET, KNOWN_POLL, voter, token), voter


def test_a_voter_id_differing_by_case_or_space_is_another_voter() -> None:
    """Voter ids are compared exactly: "Alice" and "alice " are not alice, and alice's
    invitation does not let them vote (nor theirs alice)."""
    alice = KNOWN_TOKENS["alice"]
    for other in ("Alice", "alice ", " alice", "ALICE", "alice\n"):
        assert not tokens.is_valid(KNOWN_SECRET, KNOWN_POLL, other, alice), repr(other)
        mine = tokens.voter_token(KNOWN_SECRET, KNOWN_POLL, other)
        assert not tokens.is_valid(KNOWN_SECRET, KNOWN_POLL, "alice", mine), repr(other)
    assert len(set(KNOWN_TOKENS.values())) == len(KNOWN_TOKENS)


def test_a_token_is_refused_unless_whole_and_exact() -> None:
    alice = KNOWN_TOKENS["alice"]
    refused = [
        "",
        alice[:-1],
        alice[:20],
        alice + "A",
        alice + "=",  # padding is not part of the token
        alice.upper(),
        alice[1:] + alice[0],
        "é" + alice[1:],  # non-ASCII is compared as bytes, and refused
        alice[:-1] + "\ud800",  # no text at all (a lone surrogate): refused, not an error
    ]
    for token in refused:
        assert not tokens.is_valid(KNOWN_SECRET, KNOWN_POLL, "alice", token), token


def test_reservation_key_hides_the_voter() -> None:
    key = tokens.reservation_key(POLL, "alice")
    assert "alice" not in key
    assert key == tokens.reservation_key(POLL, "alice")
    assert key != tokens.reservation_key(uuid.uuid4(), "alice")


def test_a_reissued_token_replaces_the_old_one() -> None:
    first = tokens.voter_token(SECRET, POLL, "alice")
    second = tokens.voter_token(SECRET, POLL, "alice", 1)
    assert first != second
    assert tokens.is_valid(SECRET, POLL, "alice", second, 1)
    assert not tokens.is_valid(SECRET, POLL, "alice", first, 1)
    assert not tokens.is_valid(SECRET, POLL, "alice", second, 2)
    assert tokens.reissue_key(SECRET, POLL, "alice") != tokens.reissue_key(SECRET, POLL, "bob")
    assert "alice" not in tokens.reissue_key(SECRET, POLL, "alice")


def test_reservation_key_known_answer() -> None:
    """sha256(KNOWN_POLL.bytes + b"alice").hexdigest(), computed by hand: the key by which a
    vote queued before an upgrade still refuses a second one after it."""
    assert tokens.reservation_key(KNOWN_POLL, "alice") == (
        "9b3dd89b93ea7c783dd8bebb27b88c0c2d186c906a25110c90b544342f444ba1"
    )
    assert tokens.reservation_key(KNOWN_POLL, "Alice") != tokens.reservation_key(
        KNOWN_POLL, "alice"
    )


def test_session_keys_known_answer() -> None:
    """derived_key = HMAC-SHA256(secret, b"privpoll admin session"); the fingerprint is
    HMAC-SHA256(that key, admin token), hex: both computed by hand."""
    key = tokens.derived_key(KNOWN_SECRET, "admin session")
    assert key.hex() == "28ffd7aafefc8d9f83f104e3512ccf4709f3aba7e4cee4efb61dc24efd8e058b"
    assert tokens.fingerprint(KNOWN_SECRET, "admin-token") == (
        "55f34d54ccdbb6dd8d121c7b4f72e78accfbecdb2254e856c058b72aafbb9930"
    )
    assert tokens.fingerprint(KNOWN_SECRET, "admin-token2") != tokens.fingerprint(
        KNOWN_SECRET, "admin-token"
    )
