"""The Flask ingest: an app factory, its per-process services, and JSON error handling."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from datetime import timedelta

import psycopg
from flask import Flask, Request, Response, current_app, jsonify, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from privpoll.bus.ballot_box import BallotBox
from privpoll.core.tokens import derived_key
from privpoll.service.errors import INTERNAL, ApiError
from privpoll.service.metrics import Metrics
from privpoll.service.ratelimit import Limiter, Rate
from privpoll.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER = "5"


class Services:
    """Connections of one worker process, opened on first use, i.e. after gunicorn forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # Wrong vote tokens and unknown polls per address; valid votes spend nothing here.
        self.guesses = Limiter(Rate.parse(settings.guess_rate_limit))
        self.ceiling = Limiter(Rate.parse(settings.poll_vote_ceiling), clients=1000)
        # Counts wrong admin tokens only, on the sign-in page and on the API alike.
        self.signins = Limiter(Rate.parse(settings.signin_rate_limit))
        self._lock = threading.Lock()
        self._box: BallotBox | None = None
        self._pool: ConnectionPool | None = None
        _EVERY.add(self)

    def _forget(self) -> None:
        """In a forked child: the parent's connections are the parent's; open our own."""
        self._lock = threading.Lock()
        self._box = None
        self._pool = None

    def _ensure(self) -> None:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._box = BallotBox(
                        self.settings.nats_url,
                        publish_timeout=self.settings.publish_timeout,
                        replicas=self.settings.stream_replicas,
                    )
                    self._pool = ConnectionPool(
                        self.settings.database_url,
                        min_size=1,
                        max_size=8,
                        kwargs={"autocommit": True},
                        timeout=5,
                        # After a database restart the pooled connections are dead: test each
                        # one before handing it out instead of failing the request.
                        check=ConnectionPool.check_connection,
                        open=True,
                        name="privpoll-ingest",
                    )

    @property
    def box(self) -> BallotBox:
        self._ensure()
        assert self._box is not None
        return self._box

    @property
    def pool(self) -> ConnectionPool:
        self._ensure()
        assert self._pool is not None
        return self._pool


# Every Services of this process, so a forked child (a gunicorn worker) starts afresh.
_EVERY: weakref.WeakSet[Services] = weakref.WeakSet()


def _forget_all() -> None:
    for svc in list(_EVERY):
        svc._forget()


os.register_at_fork(after_in_child=_forget_all)


def services() -> Services:
    found: Services = current_app.extensions["privpoll"]
    return found


def client_address() -> str:
    """Who sent the request, for rate limits (behind ``proxy_hops`` trusted proxies)."""
    return request.remote_addr or "unknown"


def database_down() -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        "the database cannot be reached right now; try again in a few seconds",
        headers={"Retry-After": RETRY_AFTER},
    )


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
    app.extensions["privpoll"] = Services(settings)
    from privpoll.slow_clients import body_deadline
    from privpoll.web.request_body import guard_input
    from privpoll.web.vote_route import VoteRoute

    # Votes skip Flask's request machinery (privpoll.web.vote_route); behind the proxy fix, so
    # that their rate limit sees the client's address too.
    app.wsgi_app = VoteRoute(app, app.wsgi_app)  # type: ignore[method-assign]
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    # A body that does not arrive in time is refused (slow_clients), inside the guard below.
    app.wsgi_app = body_deadline(app.wsgi_app, settings.body_timeout)  # type: ignore[method-assign, assignment]
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

    from privpoll.web.api import api
    from privpoll.web.pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int, dict[str, str]]:
        services().metrics.count("privpoll_api_errors_total", code=error.code)
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
        services().metrics.count("privpoll_api_errors_total", code=problem.code)
        if _wants_page():
            page = render_template(
                "error.html", title="Try again in a moment", message=problem.message
            )
            return page, problem.status, problem.headers
        return jsonify(problem.body()), problem.status, problem.headers

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response | str, int]:
        log.error("unexpected %s on %s %s", type(error).__name__, request.method, request.path)
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
