"""Reading a JSON request body from the WSGI environ: its size, its media type, strict JSON.

The Flask API and the bare-WSGI vote route (privpoll.vote_route) read bodies through this one
function, so both refuse the same bodies with the same errors.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wsgi import get_content_length, get_input_stream

from privpoll.errors import ApiError


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
    except Exception as error:
        # The server's reader refuses what came (chunks of a wrong size, a body cut short):
        # whatever it raises, the client sent a body that cannot be read.
        raise ApiError(
            400,
            "unreadable_body",
            "the body could not be read: send it with a right Content-Length, or as valid chunks",
        ) from error
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
