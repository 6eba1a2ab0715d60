"""Waiting for something that comes back (a restarted nats-server) in async tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
