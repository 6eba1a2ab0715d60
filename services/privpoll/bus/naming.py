"""The one place that knows NATS names: streams, subjects, consumers and KV buckets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")

Role = Literal["actors", "ballots"]
ROLES: tuple[Role, Role] = ("actors", "ballots")
REGISTRY_BUCKET = "privpoll-polls"
# Core NATS, no stream: the name of a poll whose registry entry changed in a way every ingest
# worker must see at once (a reissued link), rather than at its next check of the registry.
CHANGES = "privpoll.bus.registry.changed"


def bucket_stream(bucket: str) -> str:
    """The stream behind a KV bucket (JetStream names a bucket's stream so)."""
    return f"KV_{bucket}"


def registry_stream() -> str:
    return bucket_stream(REGISTRY_BUCKET)


def stream(poll: str) -> str:
    return f"privpoll-{poll}"


def subject(poll: str) -> str:
    return f"privpoll.votes.{poll}"


def closed(poll: str) -> str:
    """Where a closed poll's stream listens instead: publishing a vote finds no stream."""
    return f"privpoll.closed.{poll}"


def consumer(role: Role) -> str:
    return role


def voters_bucket(poll: str) -> str:
    return f"privpoll-voters-{poll}"


def reservation(poll: str, key: str) -> str:
    """The subject of one voter's reservation in the poll's voters bucket (a KV key)."""
    return f"$KV.{voters_bucket(poll)}.{key}"


async def _connection_trouble(error: Exception) -> None:
    """What nats-py reports while it reconnects, in one line. Its default logs each failed
    attempt with a traceback, and formatting a traceback parses source (Python 3.11's caret
    positions): on CPython 3.11.7 that races any other thread's ``ast.parse`` (gh-106905,
    "AST constructor recursion depth mismatch", seen in werkzeug's route compiling)."""
    log.warning("NATS connection: %s (%s)", type(error).__name__, error)


async def connect(url: str, name: str, *, buffer_while_reconnecting: bool = True) -> Client:
    """A connection that keeps trying to reconnect for as long as the process lives.

    Without buffering, a publish while NATS is away fails at once instead of being sent
    (perhaps much later) after the reconnect: the ingest must answer 503, not guess.
    """
    return await nats.connect(
        url,
        name=name,
        error_cb=_connection_trouble,
        pending_size=2 * 1024 * 1024 if buffer_while_reconnecting else 0,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
    )


async def until_reached(opening: Callable[[], Awaitable[T]], url: str, *, every: float = 1.0) -> T:
    """``opening()``, tried again every ``every`` seconds until NATS at ``url`` answers: a
    process may start before its NATS server (privpoll up, a pod rolled out beside NATS)."""
    while True:
        try:
            return await opening()
        # nats-py and the wire connection raise many kinds (refused, timeouts, TLS, no
        # servers): each means "not yet".
        except Exception as error:
            log.warning("cannot reach NATS at %s yet (%s); retrying", url, type(error).__name__)
            await asyncio.sleep(every)
