"""A deadline for reading a request: slow clients must not hold the ingest's connections.

gunicorn's gevent worker reads a request's headers under its keep-alive timeout (``--keep-alive``,
``Settings.header_timeout``: the connection is closed when they are not all in by then), but
reads the body with no deadline at all: a client that sends less than its Content-Length, a
byte now and then, holds a greenlet and a connection for as long as it likes. ``body_deadline``
gives the body ``Settings.body_timeout`` seconds from the moment the app sees the request, and
one second more for every ``MIN_RATE`` bytes that arrive (Apache's mod_reqtimeout does the
same: a large voter list on a slow link gets through, a trickle gains nothing); past it, the
read raises ``SlowBody``, a 408 JSON error (or page), and gunicorn drops the connection when
the rest of the body does not arrive within its keep-alive timeout.

Only the gevent worker class gets the deadline: ``gevent.Timeout`` interrupts a greenlet
blocked on a socket, not a thread of the gthread worker (behind an ingress, the ingress's own
timeouts do this job: docs/deploy.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from privpoll.service.errors import ApiError
from privpoll.web.request_body import StartResponse, WsgiApp

# Bytes a second a body must keep arriving at, once past its first ``body_timeout`` seconds.
MIN_RATE = 10_000


class SlowBody(ApiError):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"the request body did not arrive within {seconds:g} s; send it again at once",
        )


class _Deadline:
    """``wsgi.input`` whose reads all end by ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, stream: Any, seconds: float) -> None:
        self._stream = stream
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _call(self, method: str, size: int | None) -> bytes:
        import gevent

        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise SlowBody(self._seconds)
        timeout = gevent.Timeout(remaining)
        timeout.start()
        try:
            data: bytes = getattr(self._stream, method)(size)
        except gevent.Timeout as error:
            if error is not timeout:
                raise
            raise SlowBody(self._seconds) from None
        finally:
            timeout.close()
        self._deadline += len(data) / MIN_RATE
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._call("read", size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._call("readline", size)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def _under_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def body_deadline(app: WsgiApp, seconds: float) -> WsgiApp:
    """``app`` reading each request body within ``seconds`` (under gevent; else ``app``)."""
    if seconds <= 0 or not _under_gevent():
        return app

    def bounded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input"] = _Deadline(environ["wsgi.input"], seconds)
        return app(environ, start_response)

    return bounded
