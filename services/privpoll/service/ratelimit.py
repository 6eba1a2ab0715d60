"""Rate limits per client address: a token bucket for each address.

The buckets live in the worker process that serves the request, so an address may get up to
workers times replicas times the limit before every worker refuses it. That is enough to stop
a script hammering the vote endpoint or guessing the admin token, without shared state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from privpoll.service.errors import ApiError
from privpoll.settings import Rate


@dataclass
class _Bucket:
    tokens: float
    at: float


class Limiter:
    """Buckets of ``rate.count`` tokens that refill evenly over ``rate.period``.

    At most ``clients`` addresses are remembered; the one idle longest is forgotten first, so
    a flood of addresses costs bounded memory (a forgotten address starts with a full bucket).
    """

    def __init__(
        self,
        rate: Rate | None,
        clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.clients = clients
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, client: str, now: float) -> _Bucket:
        assert self.rate is not None
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.rate.count), now)
            if len(self._buckets) > self.clients:
                self._buckets.popitem(last=False)
        else:
            refill = (now - bucket.at) * self.rate.count / self.rate.period
            bucket.tokens = min(float(self.rate.count), bucket.tokens + refill)
            bucket.at = now
            self._buckets.move_to_end(client)
        return bucket

    def _wait(self, bucket: _Bucket) -> float:
        assert self.rate is not None
        return (1 - bucket.tokens) * self.rate.period / self.rate.count

    def wait(self, client: str) -> float:
        """Seconds until ``client`` may be served again (0: now), spending nothing."""
        if self.rate is None:
            return 0.0
        with self._lock:
            bucket = self._bucket(client, self._clock())
            return 0.0 if bucket.tokens >= 1 else self._wait(bucket)

    def spend(self, client: str) -> float:
        """Take one request from ``client``'s bucket: 0 if it may go on, else seconds to wait."""
        if self.rate is None:
            return 0.0
        with self._lock:
            bucket = self._bucket(client, self._clock())
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return self._wait(bucket)


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))


def refused(wait: float, what: str) -> ApiError:
    """The API's 429 for a client that must wait ``wait`` seconds before more ``what``."""
    return ApiError(
        429,
        "rate_limited",
        f"too many {what} from your address; try again in {retry_after(wait)} s",
        headers={"Retry-After": retry_after(wait)},
    )
