"""Pulls from one durable JetStream consumer, answered without a task per message.

nats-py's ``fetch`` hands each delivered message over through ``next_msg``: a fresh uuid4
(a system call), a task and ``asyncio.wait_for`` for every message. Draining a backlog, that
costs about 60 µs of CPU a message, more than everything else a sink does with it. Here every
pull shares one subscription whose callback appends what arrives; a pull is one request, and
it ends with the status nats-server sends when it has nothing more (about 13 µs a message).

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

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError

from privpoll.publisher import NO_RESPONDERS

# Status headers that end a pull: nothing (more) to deliver now, and the pull expired.
NO_MESSAGES = "404"
EXPIRED = "408"
HEARTBEAT = "100"
# How much longer than its expiry a pull is waited for before it is taken for lost.
GRACE = 1.0


class PullError(APIError):
    """nats-server ended a pull with an error status (503: no such consumer or stream;
    409: e.g. too many pulls waiting)."""


class Puller:
    """Pull requests to one durable consumer of one stream, over one reply subscription.

    One pull at a time: ``fetch`` is not to be called again before it returned."""

    def __init__(self, nc: Client, stream: str, durable: str) -> None:
        self.nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = nc.new_inbox() + "."
        self._pulls = itertools.count()
        self._sub: Subscription | None = None
        # Delivered and not yet handed out: a pull given up on may still deliver later,
        # and what it delivers is handed out by the next pull, never dropped.
        self._arrived: list[Msg] = []
        self._current = ""
        self._wanted = 0
        self._ended: asyncio.Event = asyncio.Event()
        self._error: PullError | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._deliver)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages: those the consumer has now, or else the first to come
        within ``timeout`` seconds (none if none came). Raises ``PullError`` when nats-server
        refuses the pull, ``nats.errors.TimeoutError`` when it does not answer at all."""
        if self._arrived:
            return self._take(batch)
        self._current = self._prefix + str(next(self._pulls))
        self._wanted = batch
        self._error = None
        self._ended.clear()
        request = {"batch": batch, "expires": int(timeout * 1e9), "no_wait": True}
        try:
            await self.nc.publish(self._next, json.dumps(request).encode(), reply=self._current)
            await asyncio.wait_for(self._ended.wait(), timeout + GRACE)
        except TimeoutError:
            if not self._arrived:
                raise NatsTimeout from None
        finally:
            self._current = ""
        if self._error is not None and not self._arrived:
            raise self._error
        return self._take(batch)

    def _take(self, batch: int) -> list[Msg]:
        taken, self._arrived = self._arrived[:batch], self._arrived[batch:]
        return taken

    async def _deliver(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            # (A delivered message carries its own subject, not the pull's: which pull
            # brought it cannot be told, and need not be.)
            self._arrived.append(msg)
            if self._current and len(self._arrived) >= self._wanted:
                self._ended.set()
            return
        if status == HEARTBEAT or msg.subject != self._current:
            return  # the end of a pull given up on already
        if status not in (NO_MESSAGES, EXPIRED):
            if status == NO_RESPONDERS:
                description = "no such consumer or stream"
            else:
                description = (msg.headers or {}).get("Description", "").strip() or "refused"
            self._error = PullError(code=int(status), description=description)
        self._ended.set()
