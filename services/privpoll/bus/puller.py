"""Pulls from one durable JetStream consumer, over the sink process's own pull connection.

A pull is one request (``$JS.API.CONSUMER.MSG.NEXT``), and every pull of a puller shares one
reply subscription on the process's ``wire.Connection``; what arrives is appended as it is
read, with no task or future per message. nats-py's ``fetch`` makes a uuid4, a task and an
``asyncio.wait_for`` for each message, which dominated a sink draining a backlog
(bench/analysis.md has the measurements).

A pull asks for up to ``batch`` messages with ``no_wait`` and ``expires`` together:
nats-server then delivers what the consumer has at once and ends the pull with a 404, or,
when it has nothing, waits until the first message comes (or the pull expires, 408) and
ends it after that one and any that came with it. That is what nats-py's ``fetch`` does in
two requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError

from privpoll.bus.publisher import NO_RESPONDERS
from privpoll.bus.wire import Connection, Delivery

# Status headers that end a pull: nothing (more) to deliver now, and the pull expired.
NO_MESSAGES = "404"
EXPIRED = "408"
HEARTBEAT = "100"
# How much longer than its expiry a pull is waited for before it is taken for lost.
GRACE = 1.0
_STATUS_LINE = b"NATS/1.0 "


# What ``Puller.fetch`` raises when nats-server does not answer a pull at all.
NoAnswer = NatsTimeout


class PullError(APIError):
    """nats-server ended a pull with an error status (503: no such consumer or stream;
    409: e.g. too many pulls waiting)."""


class Puller:
    """Pull requests to one durable consumer of one stream, over one reply subscription.

    One pull at a time: ``fetch`` is not to be called again before it returned."""

    def __init__(self, connection: Connection, stream: str, durable: str) -> None:
        self.connection = connection
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = connection.new_inbox() + "."
        self._pulls = itertools.count()
        self._sid: int | None = None
        # Delivered and not yet handed out: a pull given up on may still deliver later,
        # and what it delivers is handed out by the next pull, never dropped.
        self._arrived: list[Delivery] = []
        self._current = b""
        self._wanted = 0
        self._ended: asyncio.Event = asyncio.Event()
        self._error: Exception | None = None

    async def start(self) -> None:
        self._sid = self.connection.subscribe(self._prefix + "*", self)

    async def stop(self) -> None:
        if self._sid is not None:
            self.connection.unsubscribe(self._sid)
            self._sid = None

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages: those the consumer has now, or else the first to come
        within ``timeout`` seconds (none if none came). Raises ``PullError`` when nats-server
        refuses the pull, ``nats.errors.TimeoutError`` when it does not answer at all, and
        ``ConnectionError`` when there is no connection to NATS or it is lost meanwhile."""
        if self._arrived:
            return self._take(batch)
        current = self._prefix + str(next(self._pulls))
        self._wanted = batch
        self._error = None
        self._ended.clear()
        request = {"batch": batch, "expires": int(timeout * 1e9), "no_wait": True}
        self.connection.publish(self._next, json.dumps(request).encode(), reply=current)
        self._current = current.encode()
        try:
            await asyncio.wait_for(self._ended.wait(), timeout + GRACE)
        except TimeoutError:
            if not self._arrived:
                raise NatsTimeout from None
        finally:
            self._current = b""
        if self._error is not None and not self._arrived:
            raise self._error
        return self._take(batch)

    def _take(self, batch: int) -> list[Delivery]:
        taken, self._arrived = self._arrived[:batch], self._arrived[batch:]
        return taken

    def deliver(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        if data or not headers.startswith(_STATUS_LINE):
            # (A delivered message carries its own subject, not the pull's: which pull
            # brought it cannot be told, and need not be.)
            self._arrived.append(Delivery(reply, data))
            if self._current and len(self._arrived) >= self._wanted:
                self._ended.set()
            return
        # "NATS/1.0 404 No Messages\r\n...": a status of three digits, then a description.
        line = headers[len(_STATUS_LINE) : headers.find(b"\r\n")].decode(errors="replace")
        status, _, description = line.partition(" ")
        if status == HEARTBEAT or subject != self._current:
            return  # the end of a pull given up on already
        if status not in (NO_MESSAGES, EXPIRED):
            if status == NO_RESPONDERS:
                description = "no such consumer or stream"
            code = int(status) if status.isdigit() else 0
            self._error = PullError(code=code, description=description.strip() or "refused")
        self._ended.set()

    def lost(self) -> None:
        if self._current:
            self._error = ConnectionError("the connection to NATS was lost during a pull")
            self._ended.set()
