"""The ingest's access log line, written without building gunicorn's whole atom table.

gunicorn's ``Logger.access`` makes, for every request, a dict of every field its formats
know (the whole WSGI environ and both header lists included), wraps it, and formats the line
from it: several times the cost of the same line built from its six fields, a noticeable
share of a worker's time at saturation (bench/analysis.md). privpoll.web.gunicorn_conf sets
this class as the logger; ``access_log_format`` is not read.

The line holds the client's address, the method, the path, the status, the bytes sent and
the time taken: never a body, a query string or a header, so never a voter or a choice.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

# The line as a gunicorn --access-logformat, for gunicorn's own logger to compare against.
FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


class AccessLog(Logger):
    """gunicorn's logger, with the access line written from the six fields it shows."""

    def access(
        self,
        resp: Any,
        req: Any,
        environ: Mapping[str, Any],
        request_time: datetime.timedelta,
    ) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        self.access_log.info(
            '%s "%s %s" %s %s %dms',
            environ.get("REMOTE_ADDR", "-"),
            environ.get("REQUEST_METHOD", "-"),
            environ.get("PATH_INFO", "-"),
            status,
            "-" if sent is None else sent,
            request_time.seconds * 1000 + request_time.microseconds // 1000,
        )
