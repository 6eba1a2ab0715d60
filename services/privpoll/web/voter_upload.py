"""``POST /api/v1/polls`` as multipart/form-data: the poll as JSON, the voters as a file.

A million voter ids are about 15 MB, past the 8 MiB of a JSON body and awkward in one: the
``poll`` part holds ``{name, spec}`` without ``spec.voters``, the ``voters`` part one id a line
(blank lines and ``#`` comments skipped, as in a ConfigMap). werkzeug spools a big part to a
temporary file, so the upload itself is not held in memory twice.
"""

from __future__ import annotations

import io
import json
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from privpoll.core.spec import parse_voter_list
from privpoll.service.errors import ApiError

MEDIA_TYPE = "multipart/form-data"
# A million ids of up to 100 characters, with room to spare.
LIMIT = 128 << 20


def new_poll_body(request: Request) -> tuple[dict[str, Any], list[str]]:
    """The body of a new poll whose voters came as the ``voters`` file (its spec without
    voters), and the ids of that file."""
    request.max_content_length = LIMIT
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge as error:
        raise ApiError(413, "too_large", f"the upload is at most {LIMIT:,} bytes") from error
    poll_text = form.get("poll")
    upload = files.get("voters")
    if poll_text is None and "poll" in files:
        poll_text = files["poll"].read().decode("utf-8", errors="replace")
    if poll_text is None or upload is None:
        raise ApiError(
            400,
            "invalid_upload",
            "send two parts: 'poll' ({name, spec} as JSON, spec without voters) and "
            "'voters' (a text file, one voter id a line)",
        )
    try:
        body = json.loads(poll_text)
    except ValueError as error:
        raise ApiError(400, "invalid_json", "the 'poll' part is not valid JSON") from error
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise ApiError(400, "invalid_poll", "the 'poll' part must be {name, spec}")
    if "voters" in spec:
        raise ApiError(
            400,
            "invalid_upload",
            "the voters come in the 'voters' file: leave spec.voters out of the 'poll' part",
        )
    # Read a line at a time: a million ids are never held as bytes and text beside the list.
    lines = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline=None)
    try:
        ids = parse_voter_list(lines)
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_upload", "the 'voters' file must be UTF-8 text") from error
    finally:
        lines.detach()
    return body, ids
