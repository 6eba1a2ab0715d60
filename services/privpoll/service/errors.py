"""API errors: JSON ``{error: {code, message}}`` with a status, never a stack trace."""

from __future__ import annotations

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


# The error pages' words, for people who typed or followed a link (the API keeps its codes).
PAGE_WORDS: dict[int, tuple[str, str]] = {
    404: (
        "Page not found",
        "There is no page at this address. If you followed a link from an e-mail, check "
        "that the whole link was copied: invitation links are long and sometimes get cut.",
    ),
    405: ("Not possible here", "This page cannot be used that way. Go back and try again."),
    500: (
        "Something went wrong",
        "The server ran into a problem and could not finish. Nothing you did caused it; "
        "please try again in a moment. If it keeps happening, tell whoever runs this site.",
    ),
}
