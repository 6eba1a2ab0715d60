"""Pipelined JetStream publishes: many in flight on one connection, answered without a task each.

nats-py's ``js.publish`` runs a request per message: a fresh inbox token, a future guarded by
``asyncio.wait_for`` (a task and a timer each), and JSON parsed into a dataclass; and even a
plain publish with a shared reply subscription pays nats-py's parser, a message object, a
queue and a task for each ack. Here the publishes go over the lean connection (``wire``):
every publish shares one reply subscription, is one frame added to the connection's buffer
(everything written in the same turn of the loop goes out in one write), and its ack is
handed over as four byte strings; timeouts are swept in order by one timer, since they all
have the same length.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

from privpoll.bus import wire

SWEEP_EVERY = 0.1
# nats-server answers a request that no one listens to with this status header.
NO_RESPONDERS = "503"
_NO_RESPONDERS_LINE = b"NATS/1.0 503"


@dataclass(frozen=True, slots=True)
class Stored:
    """JetStream's answer to a publish: where the message went, or that it was a duplicate."""

    seq: int
    duplicate: bool


def headers_block(headers: dict[str, str]) -> bytes:
    """A NATS/1.0 header block (empty for no headers)."""
    if not headers:
        return b""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def read_ack(data: bytes) -> Stored:
    """JetStream's answer to a publish; raises the error's own ``APIError`` class when the
    stream refused the message."""
    try:
        body = json.loads(data)
    except ValueError:
        raise APIError(description="JetStream sent an unreadable ack") from None
    error = body.get("error")
    if error is not None:
        APIError.from_error(error)  # raises the error's own class
    return Stored(int(body.get("seq", 0)), bool(body.get("duplicate")))


class Publisher:
    """JetStream publishes with their acks, on the event loop of one lean connection."""

    def __init__(self, connection: wire.Connection, timeout: float) -> None:
        self.connection = connection
        self._timeout = timeout
        self._prefix = connection.new_inbox() + "."
        self._prefix_bytes = self._prefix.encode()
        self._tokens = itertools.count()
        self._waiting: dict[bytes, asyncio.Future[Stored]] = {}
        # (deadline, token) in the order sent: every publish has the same timeout.
        self._deadlines: collections.deque[tuple[float, bytes]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        connection.subscribe(self._prefix + "*", self)

    def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | bytes
    ) -> asyncio.Future[Stored]:
        """Send one message to the stream listening on ``subject``; the future is its ack.

        ``headers`` is a dict or a whole header block (``headers_block``). Raises
        ``ConnectionError`` while there is no connection. The future fails with
        ``NoStreamResponseError`` when no stream listens there, with JetStream's
        ``APIError`` when the stream refused the message, with ``nats.errors.TimeoutError``
        when no answer came within the timeout, and with ``ConnectionError`` when the
        connection was lost before the answer came.
        """
        loop = asyncio.get_running_loop()
        token = b"%d" % next(self._tokens)
        block = headers if isinstance(headers, bytes) else headers_block(headers)
        self.connection.publish(subject, payload, self._prefix + token.decode(), block)
        answer: asyncio.Future[Stored] = loop.create_future()
        self._waiting[token] = answer
        self._deadlines.append((time.monotonic() + self._timeout, token))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_EVERY, self._sweep)
        return answer

    def deliver(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        answer = self._waiting.pop(subject[len(self._prefix_bytes) :], None)
        if answer is None or answer.done():
            return  # timed out already
        if headers.startswith(_NO_RESPONDERS_LINE):
            answer.set_exception(NoStreamResponseError())
            return
        try:
            answer.set_result(read_ack(data))
        except APIError as refused:
            answer.set_exception(refused)

    def lost(self) -> None:
        """The connection went away: no waiting publish will be answered."""
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(ConnectionError("the connection to NATS was lost"))

    def _sweep(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = self._deadlines.popleft()
            answer = self._waiting.pop(token, None)
            if answer is not None and not answer.done():
                answer.set_exception(NatsTimeout())
        # Tokens answered in time stay in the deque until their deadline passes: cheap.
        self._sweeper = None
        if self._deadlines:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(SWEEP_EVERY, self._sweep)
