"""The Flask ingest: an app factory, its per-process services, and JSON error handling."""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg
from flask import Flask, Request, Response, jsonify, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from privpoll.core.tokens import derived_key
from privpoll.service.errors import INTERNAL, ApiError, database_down, stack_of
from privpoll.service.services import Services
from privpoll.settings import Settings
from privpoll.web.api import api
from privpoll.web.pages import pages
from privpoll.web.request_body import guard_input
from privpoll.web.vote_route import VoteRoute

log = logging.getLogger(__name__)


class PagesSessions(SecureCookieSessionInterface):
    """The session cookie is the web pages' (sign-in, form tokens); the API is stateless,
    authorized by bearer tokens, so an API request neither reads nor writes the cookie."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith("/api/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.nats_url or not settings.database_url:
        raise RuntimeError("set PRIVPOLL_NATS_URL and PRIVPOLL_DATABASE_URL (privpoll up does)")
    if not settings.admin_token or not settings.secret:
        raise RuntimeError("set PRIVPOLL_ADMIN_TOKEN and PRIVPOLL_SECRET (privpoll up does)")
    app = Flask(__name__)
    svc = app.extensions["privpoll"] = Services(settings)
    # Votes skip Flask's request machinery (privpoll.web.vote_route); behind the proxy fix, so
    # that their rate limit sees the client's address too.
    app.wsgi_app = VoteRoute(app, app.wsgi_app)  # type: ignore[method-assign]
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    # A body the server cannot read is the client's error (request_body.guard_input).
    app.wsgi_app = guard_input(app.wsgi_app)  # type: ignore[method-assign, assignment]
    app.config["MAX_CONTENT_LENGTH"] = 8 << 20
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # The web pages' session cookie (privpoll.web.pages): signed, never readable by scripts.
    app.secret_key = derived_key(settings.secret_bytes, "pages session")
    app.session_interface = PagesSessions()
    app.config.update(
        SESSION_COOKIE_NAME="privpoll_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )

    app.register_blueprint(api)
    app.register_blueprint(pages)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int, dict[str, str]]:
        svc.metrics.count("privpoll_api_errors_total", code=error.code)
        return jsonify(error.body()), error.status, error.headers

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response | str, int, dict[str, str]]:
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name
        if error.code == 413:
            message = "request body is too large"
        # e.g. Allow of a 405; the body's type is ours.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        if _wants_page():
            page = render_template("error.html", title=error.name, message=error.description)
            return page, error.code or 500, headers
        body = {"error": {"code": code, "message": message}}
        return jsonify(body), error.code or 500, headers

    @app.errorhandler(psycopg.OperationalError)
    def _database_error(
        error: psycopg.OperationalError,
    ) -> tuple[Response | str, int, dict[str, str]]:
        log.warning(
            "database unavailable on %s %s (%s)", request.method, request.path, type(error).__name__
        )
        problem = database_down()
        svc.metrics.count("privpoll_api_errors_total", code=problem.code)
        if _wants_page():
            page = render_template(
                "error.html", title="Try again in a moment", message=problem.message
            )
            return page, problem.status, problem.headers
        return jsonify(problem.body()), problem.status, problem.headers

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response | str, int]:
        log.error(
            "unexpected %s on %s %s\n%s",
            type(error).__name__,
            request.method,
            request.path,
            stack_of(error),
        )
        if _wants_page():
            message = "Something went wrong on the server; its log has more. Please try again."
            return render_template("error.html", title="Server error", message=message), 500
        return jsonify(INTERNAL), 500

    return app


def _wants_page() -> bool:
    """A browser asking for a page (not the API) gets an HTML error page."""
    if request.path.startswith("/api/"):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"
