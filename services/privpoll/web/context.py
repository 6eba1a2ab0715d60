"""What a view needs from the request it serves: the process's services and the client."""

from __future__ import annotations

from flask import current_app, request

from privpoll.service.services import Services


def services() -> Services:
    found: Services = current_app.extensions["privpoll"]
    return found


def client_address() -> str:
    """Who sent the request, for rate limits (behind ``proxy_hops`` trusted proxies)."""
    return request.remote_addr or "unknown"
