"""Request bodies: reading one whatever the client sent, and JSON bodies of the API.

The Flask API and the bare-WSGI vote route (privpoll.web.vote_route) read JSON bodies through
``read_json``, so both refuse the same bodies with the same errors. ``guard_input`` makes a
body that cannot be read (chunks of a wrong size, a body cut short) the client's error, a
400, wherever it is read: the server's reader raises its own exceptions, which would
otherwise reach Flask as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import BadRequest
from werkzeug.wsgi import get_content_length, get_input_stream

from privpoll.service.errors import ApiError

UNREADABLE = "the body could not be read: send it with a right Content-Length, or as valid chunks"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class UnreadableBody(BadRequest):
    description = UNREADABLE


class _GuardedInput:
    """``wsgi.input`` whose read errors are the client's: whatever the server's reader
    raises becomes ``UnreadableBody`` (a 400)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self._stream.read(size)
        # The server's reader raises its own kinds for a body it cannot read: the client's.
        except Exception as error:
            raise UnreadableBody() from error
        return data

    def readline(self, size: int | None = -1) -> bytes:
        try:
            line: bytes = self._stream.readline(size)
        # The server's reader raises its own kinds for a body it cannot read: the client's.
        except Exception as error:
            raise UnreadableBody() from error
        return line

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def guard_input(app: WsgiApp) -> WsgiApp:
    """``app`` with every request's body read through ``_GuardedInput``."""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input"] = _GuardedInput(environ["wsgi.input"])
        return app(environ, start_response)

    return guarded


def media_type(environ: dict[str, Any]) -> str:
    """The Content-Type without its parameters, lower case (werkzeug's ``mimetype``)."""
    return str(environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()


def read_json(environ: dict[str, Any], limit: int, what: str = "the body") -> Any:
    """The body's JSON value, or an ApiError: 413 past ``limit`` bytes, 415 for another media
    type, 400 for anything that is not strict JSON text."""
    too_large = ApiError(413, "too_large", f"{what} is at most {limit:,} bytes")
    length = get_content_length(environ)
    if length is not None and length > limit:
        raise too_large
    if media_type(environ) != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    # A streamed (chunked) body has no Content-Length: read one byte more than the limit to
    # know whether it holds more.
    try:
        data = get_input_stream(environ).read(limit + 1)
    except UnreadableBody as error:
        raise ApiError(400, "unreadable_body", UNREADABLE) from error
    if len(data) > limit:
        raise too_large
    try:
        body = json.loads(data, parse_constant=_not_json)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from error
    try:
        # JSON may escape a lone UTF-16 surrogate (\ud800), which no UTF-8 text can hold;
        # only an escape can bring one in (raw bytes must be valid UTF-8 to parse).
        if b"\\u" in data:
            json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as error:
        raise ApiError(
            400, "invalid_json", "the body holds a lone surrogate (\\udXXX), not text"
        ) from error
    return body


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has no such numbers."""
    raise ValueError(f"{constant} is not a JSON number")
