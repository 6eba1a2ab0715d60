"""What one process of the ingest holds: settings, metrics, rate limits, and its connections
to NATS and the database, opened on first use (after gunicorn forks)."""

from __future__ import annotations

import os
import threading
import weakref

from psycopg_pool import ConnectionPool

from privpoll.bus.ballot_box import BallotBox
from privpoll.service.metrics import Metrics
from privpoll.service.ratelimit import Limiter
from privpoll.settings import Rate, Settings


class Services:
    """Connections of one worker process, opened on first use, i.e. after gunicorn forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.votes = Limiter(Rate.parse(settings.vote_rate_limit))
        # Counts wrong admin tokens only, on the sign-in page and on the API alike.
        self.signins = Limiter(Rate.parse(settings.signin_rate_limit))
        self._lock = threading.Lock()
        self._box: BallotBox | None = None
        self._pool: ConnectionPool | None = None
        _EVERY.add(self)

    def _forget(self) -> None:
        """In a forked child: the parent's connections are the parent's; open our own."""
        self._lock = threading.Lock()
        self._box = None
        self._pool = None

    def _ensure(self) -> None:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._box = BallotBox(
                        self.settings.nats_url,
                        publish_timeout=self.settings.publish_timeout,
                    )
                    self._pool = ConnectionPool(
                        self.settings.database_url,
                        min_size=1,
                        max_size=8,
                        kwargs={"autocommit": True},
                        timeout=5,
                        # After a database restart the pooled connections are dead: test each
                        # one before handing it out instead of failing the request.
                        check=ConnectionPool.check_connection,
                        open=True,
                        name="privpoll-ingest",
                    )

    @property
    def box(self) -> BallotBox:
        self._ensure()
        assert self._box is not None
        return self._box

    @property
    def pool(self) -> ConnectionPool:
        self._ensure()
        assert self._pool is not None
        return self._pool


# Every Services of this process, so a forked child (a gunicorn worker) starts afresh.
_EVERY: weakref.WeakSet[Services] = weakref.WeakSet()


def _forget_all() -> None:
    for svc in list(_EVERY):
        svc._forget()


os.register_at_fork(after_in_child=_forget_all)
