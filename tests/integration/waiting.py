"""Waiting in async tests for something that comes back (a restarted nats-server) or that
arrives unanswered (acks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.js import JetStreamContext

T = TypeVar("T")


async def eventually(attempt: Callable[[], Awaitable[T]], seconds: float = 20) -> T:
    """``attempt()``'s result once it stops raising; its last error after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def acks_reached(js: JetStreamContext, stream: str, consumer: str) -> bool:
    """Whether the consumer has no delivery waiting for its ack within 10 s: acks are sent
    without an answer, so their arrival shows only in the consumer's state."""
    deadline = time.monotonic() + 10
    while (await js.consumer_info(stream, consumer)).num_ack_pending:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
