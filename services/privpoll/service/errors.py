"""API errors: JSON ``{error: {code, message}}`` with a status, never a stack trace."""

from __future__ import annotations

import traceback
from typing import Any

# The body of a 500: what went wrong is in the log, never in the answer.
INTERNAL: dict[str, Any] = {
    "error": {"code": "internal", "message": "internal error; the server log has more"}
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


# How long a client is asked to wait when a server it needs is away.
RETRY_AFTER = "5"


def unavailable(code: str, message: str) -> ApiError:
    """A 503 that asks the client to come back in a few seconds."""
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER})


def database_down() -> ApiError:
    return unavailable(
        "database_unavailable",
        "the database cannot be reached right now; try again in a few seconds",
    )


def queue_down() -> ApiError:
    return unavailable(
        "queue_unavailable", "votes cannot be queued right now; try again in a few seconds"
    )


def stack_of(error: BaseException) -> str:
    """Where ``error`` was raised, frame by frame, for the log of a 500: the files, lines and
    functions only. Neither the message nor any value is kept, since either may hold a voter
    id or a choice (docs/design.md, invariant 6)."""
    frames = traceback.extract_tb(error.__traceback__)
    return "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in frames)
