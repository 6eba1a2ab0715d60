"""Voter tokens: an HMAC of (poll uid, voter id), checked without any lookup."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable


def voter_token(secret: bytes, poll_uid: uuid.UUID, voter: str, generation: int = 0) -> str:
    """The voter's token; ``generation`` counts the times their link was reissued (0: never,
    the original token, so links handed out before reissuing existed keep working)."""
    message = poll_uid.bytes + voter.encode()
    if generation:
        # Voter ids hold no control characters: the NUL keeps (voter, generation) unambiguous.
        message += b"\x00" + str(generation).encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def voter_tokens(secret: bytes, poll_uid: uuid.UUID) -> Callable[[str, int], str]:
    """``voter_token`` of one poll for many voters: the HMAC's keyed state over the poll's
    uid is made once and copied for each voter (the invitations of a million voters)."""
    base = hmac.new(secret, poll_uid.bytes, hashlib.sha256)

    def token(voter: str, generation: int = 0) -> str:
        mac = base.copy()
        mac.update(voter.encode())
        if generation:
            mac.update(b"\x00" + str(generation).encode())
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    return token


def is_valid(
    secret: bytes, poll_uid: uuid.UUID, voter: str, token: str, generation: int = 0
) -> bool:
    return same_secret(voter_token(secret, poll_uid, voter, generation), token)


def reissue_key(secret: bytes, poll_uid: uuid.UUID, voter: str) -> str:
    """Names a voter whose link was reissued, in the poll's registry entry: keyed, so the
    registry reveals neither the voter id nor, to whoever guesses ids, who lost a link."""
    key = derived_key(secret, "reissued links")
    return hmac.new(key, poll_uid.bytes + voter.encode(), hashlib.sha256).hexdigest()[:32]


def same_secret(expected: str, given: str) -> bool:
    """Constant-time comparison of a secret with what a client sent.

    As bytes: ``compare_digest`` refuses str with non-ASCII characters, which anyone can send.
    """
    return hmac.compare_digest(expected.encode(), given.encode(errors="replace"))


def reservation_key(poll_uid: uuid.UUID, voter: str) -> str:
    """The KV key that reserves a voter in `prevent` mode (no voter id in NATS key names)."""
    return hashlib.sha256(poll_uid.bytes + voter.encode()).hexdigest()


def derived_key(secret: bytes, label: str) -> bytes:
    """A key for one purpose (e.g. signing the pages' session cookie) from the server secret."""
    return hmac.new(secret, f"privpoll {label}".encode(), hashlib.sha256).digest()


def fingerprint(secret: bytes, admin_token: str) -> str:
    """Names the admin token in a session cookie: a new admin token signs every session out."""
    key = derived_key(secret, "admin session")
    return hmac.new(key, admin_token.encode(), hashlib.sha256).hexdigest()
