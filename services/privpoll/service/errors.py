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
