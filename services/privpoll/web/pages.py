"""The web pages: sign-in, polls of the creator, the voting page and the results page.

Every action goes through the same functions as the JSON API (``privpoll.polls``). The
creator signs in with the admin token and gets a session cookie; every form carries a
per-session CSRF token that every POST here must send back.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WebResponse

from privpoll.core import randomness, tokens
from privpoll.core.poll import Phase, Poll
from privpoll.core.results import expected_margin
from privpoll.service import erase, polls, ratelimit, reissue
from privpoll.service import invitations as mailing
from privpoll.service.errors import PAGE_WORDS, ApiError
from privpoll.service.ratelimit import retry_after
from privpoll.web import voter_upload
from privpoll.web.chart import bar_chart
from privpoll.web.context import client_address, services
from privpoll.web.forms import CUSTOM, PRESETS, PollForm, VoterListError, decode_upload

pages = Blueprint("pages", __name__)

P = ParamSpec("P")
R = TypeVar("R")

SHOWN_INVITATIONS = 300
NAME_ATTEMPTS = 20
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# On every answer of the ingest, pages and JSON alike (the vote route sets them too).
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Invitation links carry the voter and their token: never send them on as a referrer.
    ("Referrer-Policy", "no-referrer"),
)


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = randomness.token(24)
    return token


def signed_in() -> bool:
    settings = services().settings
    expected = tokens.fingerprint(settings.secret_bytes, settings.admin_token)
    given = session.get("admin")
    return isinstance(given, str) and tokens.same_secret(expected, given)


@pages.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "signed_in": signed_in}


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return page("error.html", status, title=title, message=message)


@pages.before_request
def _check_csrf() -> tuple[str, int] | None:
    if request.method != "POST":
        return None
    if request.endpoint == "pages.create_poll":
        # A voters file of up to a million ids; read before the form token is.
        request.max_content_length = voter_upload.LIMIT
    expected = session.get("csrf")
    sent = request.form.get("csrf", "")
    if isinstance(expected, str) and sent and tokens.same_secret(expected, sent):
        return None
    return error_page(
        403,
        "This form was refused",
        "It did not come with this site's form token: it was sent from another site, or the "
        "page is too old, or your browser does not keep this site's cookie. Go back, reload "
        "the page and send the form again.",
    )


# Every response of the app, not only this blueprint's: error pages (404, 405, 500) are
# pages too, and JSON is harmless under the same rules.
@pages.after_app_request
def _headers(response: Response) -> Response:
    for header, value in SECURITY_HEADERS:
        response.headers[header] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@pages.errorhandler(ApiError)
def _api_error(error: ApiError) -> tuple[str, int, dict[str, str]]:
    titles = {404: "Not found", 403: "Not allowed", 503: "Try again in a moment"}
    title = titles.get(error.status, "That did not work")
    return (*error_page(error.status, title, error.message), error.headers)


def _slow_down(wait: float) -> tuple[str, int, dict[str, str]]:
    message = f"Too many tries from your address. Wait {retry_after(wait)} seconds, then retry."
    page_html, status = error_page(429, "Slow down", message)
    return page_html, status, {"Retry-After": retry_after(wait)}


@pages.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    title, message = PAGE_WORDS.get(error.code or 500, (error.name, error.description or ""))
    if error.code == 413:
        message = "What you sent is too large (at most 8 MB)."
    return error_page(error.code or 500, title, message)


def admin_page(view: Callable[P, R]) -> Callable[P, R | WebResponse]:
    """Pages for the poll creator: without a session, off to the sign-in page."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | WebResponse:
        if not signed_in():
            target = request.full_path if request.method == "GET" else url_for("pages.poll_list")
            return redirect(url_for("pages.signin", next=target.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.poll_list")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("pages.poll_list")
    return target


# -- the poll creator ------------------------------------------------------------------------


@pages.get("/")
def home() -> WebResponse:
    return redirect(url_for("pages.poll_list"))


@pages.route("/signin", methods=["GET", "POST"])
def signin() -> WebResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    target = _local_path(request.values.get("next"))
    if request.method == "GET":
        if signed_in():
            return redirect(target)
        return page("signin.html", next=target, signed_out="signed_out" in request.args)
    svc = services()
    settings = svc.settings
    wait = svc.signins.wait(client_address())
    if wait:
        return _slow_down(wait)
    given = request.form.get("token", "").strip()
    if not given or not tokens.same_secret(settings.admin_token, given):
        svc.signins.spend(client_address())
        return page(
            "signin.html",
            400,
            next=target,
            problem="That is not the admin token. The command privpoll up prints it when it "
            "starts.",
        )
    session.clear()
    session.permanent = True
    session["admin"] = tokens.fingerprint(settings.secret_bytes, settings.admin_token)
    session["csrf"] = randomness.token(24)
    return redirect(target, 303)


@pages.post("/signout")
def signout() -> WebResponse:
    session.clear()
    return redirect(url_for("pages.signin", signed_out=1), 303)


@pages.get("/polls")
@admin_page
def poll_list() -> tuple[str, int]:
    rows = [(poll, len(polls.voted(services(), poll))) for poll in polls.all_polls(services())]
    return page("polls.html", rows=rows, notice=session.pop("notice", None))


def _form_page(form: PollForm, status: int = 200) -> tuple[str, int]:
    preset_data = {
        key: {
            "distribution": p.distribution,
            "fake": p.fake,
            "fakeMin": p.fake_min,
            "fakeMax": p.fake_max,
            "randomized": p.randomized,
            "epsilon": p.epsilon,
        }
        for key, p in PRESETS.items()
    }
    return page(
        "new_poll.html",
        status,
        form=form,
        presets=PRESETS,
        preset_data=preset_data,
        custom=CUSTOM,
        preview=form.preview(),
    )


@pages.get("/polls/new")
@admin_page
def new_poll() -> tuple[str, int]:
    return _form_page(PollForm())


@pages.post("/polls/new")
@admin_page
def create_poll() -> WebResponse | tuple[str, int]:
    upload = request.files.get("votersFile")
    text: str | None = None
    problem: str | None = None
    if upload is not None and upload.filename:
        try:
            text = decode_upload(upload.read())
        except VoterListError as error:
            problem = f"the uploaded file: {error}"
    form = PollForm.submitted(request.form.get, request.form.getlist("choice"), text)
    if problem:
        form = form.with_problems({"voters": [problem]})
    action = request.form.get("action", "create")
    if action == "add-choice":
        return _form_page(form.add_choice())
    if action.startswith("remove-choice-") and action.removeprefix("remove-choice-").isdigit():
        return _form_page(form.remove_choice(int(action.removeprefix("remove-choice-"))))
    if action == "preview":
        return _form_page(form)
    for attempt in range(1, NAME_ATTEMPTS + 1):
        body, found = form.body(attempt)
        try:
            new = polls.parse_new_poll(body)
        except ApiError as error:
            found = {**form.api_problems(error.fields or []), **found}
            return _form_page(form.with_problems(found), 400)
        if found or form.problems:
            return _form_page(form.with_problems(found), 400)
        try:
            poll = polls.create_poll(services(), new)
        except ApiError as error:
            if error.code == "poll_exists" and form.derived_name:
                continue
            key = "name" if error.code == "poll_exists" else "form"
            return _form_page(form.with_problems({key: [error.message]}), error.status)
        merged = form.repeated_voters()
        target = url_for("pages.poll_page", name=poll.name, merged=merged or None)
        return redirect(target, 303)
    return _form_page(
        form.with_problems({"name": ["every name made from this title is taken: type one"]}), 409
    )


def _schedule(poll: Poll) -> dict[str, Any]:
    return {
        "opens": poll.rules.schedule.opens_at,
        "closes": poll.rules.schedule.closes_at,
    }


@pages.get("/polls/<name>")
@admin_page
def poll_page(name: str, delete_problem: str = "", status: int = 200) -> tuple[str, int]:
    poll = polls.stored_poll(services(), name)
    voters = polls.voter_ids(services(), poll)
    voted = polls.voted(services(), poll)
    waiting = [voter for voter in voters if voter not in voted]
    return page(
        "poll.html",
        status,
        poll=poll,
        phase=poll.phase(),
        schedule=_schedule(poll),
        # Only the invitations shown are made (the CSV and the API list them all).
        invitations=list(polls.each_invitation(services(), poll, voters[:SHOWN_INVITATIONS])),
        hidden_invitations=max(len(voters) - SHOWN_INVITATIONS, 0),
        voted=len(voted),
        waiting=waiting,
        stored=polls.turnout(services(), poll),
        Phase=Phase,
        merged=request.args.get("merged", 0, type=int),
        reissued=request.args.get("reissued", ""),
        delete_problem=delete_problem,
        mail=mailing.progress(services(), name),
        mail_notice=session.pop("mail_notice", None),
        skipped_ids=sum(1 for voter in voters if not mailing.is_address(voter)),
    )


@pages.post("/polls/<name>/invitations/send")
@admin_page
def send_invitations(name: str) -> WebResponse:
    try:
        found = mailing.send_invitations(
            services(), name, again=request.form.get("again") == "true"
        )
    except ApiError as error:
        if error.status == 404:
            raise
        session["mail_notice"] = error.message[:1].upper() + error.message[1:] + "."
    else:
        done = f"{found.queued} {'invitation is' if found.queued == 1 else 'invitations are'}"
        session["mail_notice"] = (
            f"{done} on the way"
            + (f"; {found.already} had theirs already" if found.already else "")
            + (f"; {len(found.skipped)} ids are not addresses" if found.skipped else "")
            + "."
        )
    return redirect(url_for("pages.poll_page", name=name, _anchor="mail"), 303)


@pages.post("/polls/<name>/reminders")
@admin_page
def send_reminders(name: str) -> WebResponse:
    try:
        queued = mailing.send_reminders(services(), name)
    except ApiError as error:
        if error.status == 404:
            raise
        session["mail_notice"] = error.message[:1].upper() + error.message[1:] + "."
    else:
        session["mail_notice"] = (
            f"{queued} {'reminder is' if queued == 1 else 'reminders are'} on the way."
        )
    return redirect(url_for("pages.poll_page", name=name, _anchor="mail"), 303)


@pages.get("/polls/<name>/mail.json")
@admin_page
def mail_json(name: str) -> WebResponse:
    return jsonify(mailing.progress(services(), name))


@pages.post("/polls/<name>/reissue")
@admin_page
def reissue_link(name: str) -> WebResponse:
    voter = request.form.get("voter", "")
    reissue.reissue(services(), name, voter)
    target = url_for("pages.poll_page", name=name, reissued=voter, _anchor="invitations")
    return redirect(target, 303)


@pages.post("/polls/<name>/delete")
@admin_page
def delete_poll(name: str) -> WebResponse | tuple[str, int]:
    if request.form.get("confirm", "").strip() != name:
        return poll_page(name, f"Type {name} exactly: nothing was deleted.", 400)
    session["notice"] = erase.delete_poll(services(), name).describe().capitalize() + "."
    return redirect(url_for("pages.poll_list"), 303)


@pages.get("/polls/<name>/turnout.json")
@admin_page
def turnout(name: str) -> WebResponse:
    poll = polls.stored_poll(services(), name)
    return jsonify(
        {
            "phase": poll.phase().value,
            "voted": len(polls.voted(services(), poll)),
            "eligible": poll.eligible,
        }
    )


@pages.post("/polls/<name>/close")
@admin_page
def close_poll(name: str) -> WebResponse:
    polls.close_poll(services(), name)
    return redirect(url_for("pages.poll_page", name=name), 303)


def _csv(rows: Iterable[list[str]], filename: str) -> WebResponse:
    """A CSV file written as it is made, in chunks of a thousand rows, letting the worker's
    other requests run between them (as the API's JSON arrays do)."""

    def chunks() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        each = iter(rows)
        while batch := list(itertools.islice(each, 1000)):
            writer.writerows(batch)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            time.sleep(0)  # gevent.sleep(0) in a gevent worker, a GIL release in gthread

    return Response(
        chunks(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@pages.get("/polls/<name>/invitations.csv")
@admin_page
def invitations_csv(name: str) -> WebResponse:
    poll = polls.stored_poll(services(), name)
    rows = itertools.chain(
        [["voter", "url"]], ([i.voter, i.url] for i in polls.each_invitation(services(), poll))
    )
    return _csv(rows, f"{name}-invitations.csv")


# -- results (public, per the poll's visibility) ---------------------------------------------


def _results(name: str) -> tuple[Poll, dict[str, Any]]:
    poll = polls.stored_poll(services(), name)
    return poll, polls.results_of(services(), poll, admin=signed_in())


@pages.get("/polls/<name>/results")
def results_page(name: str) -> tuple[str, int]:
    poll = polls.stored_poll(services(), name)
    try:
        found = polls.results_of(services(), poll, admin=signed_in())
    except ApiError as error:
        if error.code != "results_not_public_yet":
            raise
        return page("results_later.html", 403, poll=poll, schedule=_schedule(poll))
    votes = found["votes"]
    n, stored = votes["total"], votes["storedBallots"]
    p = poll.rules.replacement_probability()
    margin = expected_margin(n, len(poll.rules.choices), (stored - n) / n, p) if n else 0.0
    unwritten = found.get("pending") or 0
    return page(
        "results.html",
        poll=poll,
        results=found,
        chart=bar_chart(found["choices"], n),
        margin=margin,
        p=p,
        unwritten=unwritten,
    )


@pages.get("/polls/<name>/results.json")
def results_json(name: str) -> WebResponse:
    poll, found = _results(name)
    response = jsonify(found)
    response.headers["Content-Disposition"] = f'attachment; filename="{poll.name}-results.json"'
    return response


@pages.get("/polls/<name>/results.csv")
def results_csv(name: str) -> WebResponse:
    poll, found = _results(name)
    rows = [["choice", "estimate", "ci95_low", "ci95_high", "stored_ballots", "raw_estimate"]]
    for row in found["choices"]:
        lo, hi = row["ci95"]
        rows.append(
            [
                row["choice"],
                str(row["estimate"]),
                str(lo),
                str(hi),
                str(row["stored"]),
                str(row["rawEstimate"]),
            ]
        )
    return _csv(rows, f"{poll.name}-results.csv")


# -- voters ----------------------------------------------------------------------------------
# Nothing here logs, and no page or redirect after a vote names the voter: the choice and the
# voter meet only inside ``polls.cast``.


def _ballot_problem(error: ApiError, name: str) -> tuple[str, int, dict[str, str]]:
    kinds = {
        "poll_not_found": "missing",
        "invalid_token": "invalid",
        "poll_closed": "closed",
        "poll_not_open": "pending",
        "already_voted": "voted",
        "queue_unavailable": "busy",
    }
    poll = None
    if error.code in ("poll_closed", "poll_not_open", "already_voted"):
        poll = polls.stored_poll(services(), name)
    shown, status = page(
        "vote_problem.html",
        error.status,
        kind=kinds.get(error.code, "other"),
        message=error.message,
        poll=poll,
        schedule=_schedule(poll) if poll else None,
        results_open=poll is not None and _results_open(poll),
    )
    # e.g. the Retry-After of a 429
    return shown, status, error.headers


def _results_open(poll: Poll) -> bool:
    return poll.rules.results.visibility == "live" or poll.phase() is Phase.CLOSED


def _ballot_page(poll: Poll, voter: str, token: str, problem: str = "", status: int = 200) -> Any:
    choices = list(poll.rules.choices)
    randomness.shuffle(choices)
    return page(
        "vote.html",
        status,
        poll=poll,
        voter=voter,
        token=token,
        choices=choices,
        problem=problem,
        schedule=_schedule(poll),
    )


@pages.get("/vote/<name>")
def ballot(name: str) -> Any:
    voter = request.args.get("voter", "")
    token = request.args.get("token", "")
    if not voter or not token:
        return _ballot_problem(
            ApiError(400, "invalid_token", "this link lacks its voter or token"), name
        )
    try:
        with ratelimit.guarding(services().guesses, client_address()):
            poll = polls.open_ballot(services(), name, voter, token)
        if polls.has_voted(services(), poll, voter):
            raise ApiError(409, "already_voted", "this invitation has been used to vote")
    except ApiError as error:
        return _ballot_problem(error, name)
    return _ballot_page(poll, voter, token)


@pages.post("/vote/<name>")
def cast(name: str) -> Any:
    voter = request.form.get("voter", "")
    token = request.form.get("token", "")
    choice = request.form.get("choice", "")
    try:
        with ratelimit.guarding(services().guesses, client_address()):
            poll = polls.open_ballot(services(), name, voter, token)
    except ApiError as error:
        return _ballot_problem(error, name)
    if not choice:
        return _ballot_page(poll, voter, token, "Pick one of the choices, then vote.", 400)
    try:
        ratelimit.ceiling(services().ceiling, poll.name)
        polls.cast(services(), poll, voter, choice)
    except ApiError as error:
        if error.code == "invalid_choice":
            return _ballot_page(poll, voter, token, "Pick one of the choices shown.", 400)
        if error.code == "queue_unavailable":
            return _ballot_page(
                poll,
                voter,
                token,
                "Your vote could not be recorded right now, and nothing was counted. "
                "Please try again in a few seconds.",
                503,
            )
        return _ballot_problem(error, name)
    # The thank-you page is for whoever voted from this browser: the session remembers the
    # poll's name (never the voter, never the choice).
    voted_in = [p for p in session.get("voted_in", []) if isinstance(p, str)][-20:]
    session["voted_in"] = [*voted_in, name] if name not in voted_in else voted_in
    return redirect(url_for("pages.voted", name=name), 303)


@pages.get("/vote/<name>/done")
def voted(name: str) -> tuple[str, int]:
    if name not in session.get("voted_in", []):
        return error_page(
            404,
            "No vote from this browser",
            "This page thanks voters after they vote, and no vote in this poll was sent from "
            "this browser. To vote, open the invitation link you received.",
        )
    poll = polls.stored_poll(services(), name)
    return page("voted.html", poll=poll, results_open=_results_open(poll))
