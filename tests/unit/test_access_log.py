"""The ingest's access line: what gunicorn's own logger would write, and no query string."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, ClassVar

from gunicorn.config import Config
from gunicorn.glogging import Logger

from privpoll.web.access_log import FORMAT, AccessLog

TOKEN = "s3cret-invitation-token"


class _Response:
    def __init__(self, status: str | int, sent: int | None) -> None:
        self.status, self.sent = status, sent
        self.headers = [("Content-Type", "application/json"), ("X-Frame-Options", "DENY")]


class _Request:
    headers: ClassVar[list[tuple[str, str]]] = [("HOST", "localhost"), ("USER-AGENT", "wrk")]


def _environ(path: str, query: str) -> dict[str, Any]:
    return {
        "REMOTE_ADDR": "10.1.2.3",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": f"{path}?{query}" if query else path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": "wrk",
    }


REQUESTS = [
    (_Response("202 ACCEPTED", 14), "/api/v1/polls/lunch/votes", "", 3_456),
    (_Response("200 OK", 5_120), "/polls/lunch/vote", f"voter=ann&token={TOKEN}", 1_250_999),
    (_Response(404, 0), "/nowhere", "", 0),
    (_Response("500 INTERNAL SERVER ERROR", None), "/api/v1/polls", "", 61_000),
]


def _lines(logger_class: type[Any], log: Path) -> list[str]:
    config = Config()
    config.set("accesslog", str(log))
    config.set("access_log_format", FORMAT)
    logger = logger_class(config)
    for response, path, query, micros in REQUESTS:
        elapsed = datetime.timedelta(microseconds=micros)
        logger.access(response, _Request(), _environ(path, query), elapsed)
    for handler in logger.access_log.handlers:
        handler.flush()
    return log.read_text().splitlines()


def test_the_line_is_gunicorns_own_for_the_same_request(tmp_path: Path) -> None:
    ours = _lines(AccessLog, tmp_path / "ours.log")
    theirs = _lines(Logger, tmp_path / "gunicorn.log")

    assert ours == theirs
    assert ours[0] == '10.1.2.3 "GET /api/v1/polls/lunch/votes" 202 14 3ms'
    assert ours[3].endswith(" 500 - 61ms")


def test_an_invitation_token_in_the_query_string_is_not_written(tmp_path: Path) -> None:
    lines = _lines(AccessLog, tmp_path / "ours.log")

    assert lines[1] == '10.1.2.3 "GET /polls/lunch/vote" 200 5120 1250ms'
    assert not any(TOKEN in line for line in lines)
