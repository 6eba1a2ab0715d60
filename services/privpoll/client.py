"""A client of privpoll's HTTP API with the standard library only: the ``privpoll`` command
and the chart's ``helm test`` pod both speak to an installation through it."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class Unreachable(Exception):
    """No answer from the installation at all (refused, a name that does not resolve, …)."""


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str
    data: bytes
    content_type: str
    filename: str | None = None


class ApiClient:
    def __init__(self, base: str, admin_token: str = "", *, timeout: float = 30) -> None:
        self.base = base.rstrip("/")
        self.admin_token = admin_token
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, *, admin: bool = False
    ) -> tuple[int, Any]:
        """(status, the JSON answer); an answer that is not JSON comes back as None."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return self._send(method, path, data, headers, admin=admin)

    def upload(self, path: str, parts: list[Part], *, admin: bool = False) -> tuple[int, Any]:
        """POST ``parts`` as multipart/form-data (a poll with its voter file)."""
        boundary = f"privpoll-{secrets.token_hex(16)}"
        chunks: list[bytes] = []
        for part in parts:
            filename = f'; filename="{part.filename}"' if part.filename else ""
            chunks += [
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="{part.name}"{filename}\r\n'.encode(),
                f"Content-Type: {part.content_type}\r\n\r\n".encode(),
                part.data,
                b"\r\n",
            ]
        chunks.append(f"--{boundary}--\r\n".encode())
        headers = {
            "Accept": "application/json",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        return self._send("POST", path, b"".join(chunks), headers, admin=admin)

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, admin: bool
    ) -> tuple[int, Any]:
        if admin:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        request = urllib.request.Request(  # noqa: S310 (the URL is the installation's own)
            f"{self.base}{path}", data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return answer.status, _json(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"cannot reach privpoll at {self.base} ({reason})") from error


def _json(data: bytes) -> Any:
    try:
        return json.loads(data or b"null")
    except ValueError:
        return None


def problem(status: int, answer: Any) -> str:
    """An error answer in words: the API's message and code, else the bare status."""
    try:
        error = answer["error"]
        return f"{error['message']} ({status} {error['code']})"
    except (KeyError, TypeError):
        return f"HTTP {status}"
