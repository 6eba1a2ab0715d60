"""Pipelined JetStream publishes: many in flight on one connection, answered without a task each.

nats-py's ``js.publish`` runs a request per message: a fresh inbox token, a future guarded by
``asyncio.wait_for`` (a task and a timer each), and JSON parsed into a dataclass. On the
vote path that costs about three times the publish itself. Here every publish shares one
reply subscription, a publish is one write to the connection's buffer (the client flushes
everything written in the same loop turn at once), and timeouts are swept in order by one
timer, since they all have the same length.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

SWEEP_EVERY = 0.1
# nats-server answers a request that no one listens to with this status header.
NO_RESPONDERS = "503"


@dataclass(frozen=True, slots=True)
class Stored:
    """JetStream's answer to a publish: where the message went, or that it was a duplicate."""

    seq: int
    duplicate: bool


class Publisher:
    """JetStream publishes with their acks, on the event loop of one NATS connection."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self.nc = nc
        self._timeout = timeout
        self._prefix = nc.new_inbox() + "."
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Stored]] = {}
        # (deadline, token) in the order sent: every publish has the same timeout.
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._sub: Subscription | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._answer)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Stored]:
        """Send one message to the stream listening on ``subject``; the future is its ack.

        The future fails with ``NoStreamResponseError`` when no stream listens there, with
        JetStream's ``APIError`` when the stream refused the message, and with
        ``nats.errors.TimeoutError`` when no answer came within the timeout.
        """
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        answer: asyncio.Future[Stored] = loop.create_future()
        self._waiting[token] = answer
        self._deadlines.append((time.monotonic() + self._timeout, token))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_EVERY, self._sweep)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except Exception:
            del self._waiting[token]
            raise
        return answer

    async def _answer(self, msg: Msg) -> None:
        answer = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if answer is None or answer.done():
            return  # timed out already
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            answer.set_exception(NoStreamResponseError())
            return
        try:
            body = json.loads(msg.data)
        except ValueError:
            answer.set_exception(APIError(description="JetStream sent an unreadable ack"))
            return
        error = body.get("error")
        if error is not None:
            try:
                APIError.from_error(error)  # raises the error's own class
            except APIError as refused:
                answer.set_exception(refused)
        else:
            answer.set_result(Stored(int(body.get("seq", 0)), bool(body.get("duplicate"))))

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
