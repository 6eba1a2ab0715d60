"""Invitations and reminders by e-mail, sent in the background with their progress stored.

Each message to send is a row of the ``mail`` table (poll, kind, voter, state); a request
queues rows and starts a sender in its worker process, which claims queued rows a batch at a
time (a row is claimed by one sender only: nobody gets a message twice), sends them and
records each outcome. Sending again queues only who was not mailed yet, unless asked.
Reminders go to voters who have not voted, checked again right before each batch leaves.

Logs say how many messages went, never to whom; the choice of a voter is never known here.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from markupsafe import escape
from psycopg import sql

from privpoll.bus.ballot_box import QueueDown
from privpoll.core.poll import Phase, Poll
from privpoll.db import storage
from privpoll.service.errors import ApiError
from privpoll.service.mail import Letter, Mailer, MailSetupError, Outcome
from privpoll.service.polls import each_invitation, stored_poll, voted, voter_ids
from privpoll.service.services import Services

log = logging.getLogger(__name__)

Kind = Literal["invitation", "reminder"]
KINDS: tuple[Kind, Kind] = ("invitation", "reminder")
BATCH = 50
SHOWN_FAILURES = 200
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
HOW_TO_CONFIGURE = (
    "e-mail is not set up: set PRIVPOLL_SMTP_URL (e.g. smtp://user:password@mail.example.org:587, "
    "or smtps:// for TLS) and PRIVPOLL_MAIL_FROM (the sender's address) where privpoll runs, "
    "then restart it"
)

_senders: set[str] = set()
_senders_lock = threading.Lock()


def is_address(voter: str) -> bool:
    return bool(_ADDRESS.fullmatch(voter))


def configured(svc: Services) -> bool:
    settings = svc.settings
    return bool(settings.smtp_url and settings.mail_from)


def _mailer(svc: Services) -> Mailer:
    settings = svc.settings
    if not configured(svc):
        raise ApiError(409, "mail_not_configured", HOW_TO_CONFIGURE)
    try:
        return Mailer(settings.smtp_url, settings.mail_from)
    except MailSetupError as error:
        raise ApiError(409, "mail_not_configured", str(error)) from error


def _open_poll(svc: Services, name: str) -> Poll:
    poll = stored_poll(svc, name)
    if poll.phase() is Phase.CLOSED:
        raise ApiError(409, "poll_closed", "this poll is closed: nobody can vote any more")
    return poll


@dataclass(frozen=True)
class Queued:
    queued: int
    skipped: list[str]
    already: int

    def to_json(self) -> dict[str, Any]:
        return {"queued": self.queued, "skipped": self.skipped, "alreadySent": self.already}


def send_invitations(svc: Services, name: str, *, again: bool = False) -> Queued:
    """Queue one invitation per voter whose id is an e-mail address (``again``: also to
    those mailed before) and start sending."""
    poll = _open_poll(svc, name)
    _mailer(svc)
    voters = voter_ids(svc, poll)
    mailable = [v for v in voters if is_address(v)]
    skipped = [v for v in voters if not is_address(v)]
    with svc.pool.connection() as conn:
        queued = _queue(conn, poll, "invitation", mailable, again=again)
    _start(svc, name)
    return Queued(queued, skipped, len(mailable) - queued)


def send_reminders(svc: Services, name: str) -> int:
    """Queue a reminder for every voter with an address who has not voted; start sending."""
    poll = _open_poll(svc, name)
    _mailer(svc)
    with svc.pool.connection() as conn:
        busy = conn.execute(
            "SELECT count(*) FROM mail WHERE poll = %s AND kind = 'reminder' "
            "AND state IN ('queued', 'sending')",
            (poll.uid,),
        ).fetchone()
        if busy and busy[0]:
            raise ApiError(
                409,
                "reminders_in_progress",
                f"{busy[0]} reminders of the last round are still being sent: wait until they "
                "are out (the poll page shows the progress), then send again",
            )
        # One read of who voted for the whole list; each batch checks its voters again.
        done = voted(svc, poll)
        waiting = [v for v in voter_ids(svc, poll) if is_address(v) and v not in done]
        queued = _queue(conn, poll, "reminder", waiting, again=True)
    _start(svc, name)
    return queued


def _queue(
    conn: psycopg.Connection[Any], poll: Poll, kind: Kind, voters: list[str], *, again: bool
) -> int:
    """Rows for ``voters``, and failed ones queued again; with ``again`` sent ones too (never
    one still queued or being sent). How many were queued."""
    if not voters:
        return 0
    # A failed message was never delivered: sending again retries it. One sent (or on its
    # way) is sent again only when asked.
    redo = "('queued', 'sending')" if again else "('queued', 'sending', 'sent', 'skipped')"
    conflict = sql.SQL(
        "DO UPDATE SET state = 'queued', detail = '' WHERE mail.state NOT IN " + redo
    )
    insert = sql.SQL(
        "INSERT INTO mail (poll, kind, voter, state) "
        "SELECT %s, %s, v, 'queued' FROM unnest(%s::text[]) AS v "
        "ON CONFLICT (poll, kind, voter) {}"
    ).format(conflict)

    def work(cur: psycopg.Cursor[Any]) -> int:
        cur.execute(insert, (poll.uid, kind, voters))
        return cur.rowcount

    return storage.run_transaction(conn, work)


def _not_voted(
    svc: Services, conn: psycopg.Connection[Any], poll: Poll, voters: list[str]
) -> list[str]:
    """Those of ``voters`` with no vote stored and (``prevent`` mode) none accepted."""
    if not voters:
        return []
    rows = conn.execute(
        "SELECT DISTINCT voter FROM actors WHERE poll = %s AND voter = ANY(%s)",
        (poll.uid, voters),
    ).fetchall()
    stored = {str(r[0]) for r in rows}
    box = svc.box
    left = []
    for voter in voters:
        if voter in stored:
            continue
        try:
            if box.call(box.has_voted(poll, voter)):
                continue
        except QueueDown:
            # Cannot tell: no reminder is better than one to somebody who voted.
            continue
        left.append(voter)
    return left


def _start(svc: Services, name: str) -> None:
    """A sender for the poll in this process, unless one runs already."""
    with _senders_lock:
        if name in _senders:
            return
        _senders.add(name)
    threading.Thread(target=_send_all, args=(svc, name), name=f"mail-{name}", daemon=True).start()


def _send_all(svc: Services, name: str) -> None:
    try:
        sent = failed = 0
        while True:
            with svc.pool.connection() as conn:
                poll = storage.get_poll(conn, name)
                if poll is None:
                    return
                claimed = _claim(conn, poll)
            if not claimed:
                break
            outcomes = _send_batch(svc, poll, claimed)
            sent += sum(o.sent for o in outcomes)
            failed += sum(not o.sent for o in outcomes)
        if sent or failed:
            log.info("mail for poll %s: %d messages sent, %d failed", name, sent, failed)
    # A sender thread must end cleanly whatever happens: its stack goes to the log.
    except Exception:
        log.exception("the mail sender of poll %s stopped", name)
    finally:
        with _senders_lock:
            _senders.discard(name)


def _claim(conn: psycopg.Connection[Any], poll: Poll) -> list[tuple[Kind, str]]:
    """Up to BATCH queued rows, now 'sending': rows another sender claimed are not taken."""

    def work(cur: psycopg.Cursor[Any]) -> list[tuple[Kind, str]]:
        cur.execute(
            "UPDATE mail SET state = 'sending' WHERE poll = %s AND state = 'queued' AND "
            "(kind, voter) IN (SELECT kind, voter FROM mail WHERE poll = %s AND "
            "state = 'queued' LIMIT %s) RETURNING kind, voter",
            (poll.uid, poll.uid, BATCH),
        )
        return [(row[0], str(row[1])) for row in cur.fetchall()]

    return storage.run_transaction(conn, work)


def _send_batch(svc: Services, poll: Poll, claimed: list[tuple[Kind, str]]) -> list[Outcome]:
    reminders = [voter for kind, voter in claimed if kind == "reminder"]
    with svc.pool.connection() as conn:
        waiting = set(_not_voted(svc, conn, poll, reminders))
        late = [
            (v, "skipped", "voted before the reminder left") for v in reminders if v not in waiting
        ]
        _record(conn, poll, "reminder", late)
    going = [(kind, voter) for kind, voter in claimed if kind == "invitation" or voter in waiting]
    links = {i.voter: i.url for i in each_invitation(svc, poll, sorted({v for _, v in going}))}
    letters = [letter(poll, kind, voter, links[voter]) for kind, voter in going]
    kinds = iter([kind for kind, _ in going])

    def done(outcome: Outcome) -> None:
        # Each outcome is stored as soon as it is known: a sender that stops half-way leaves
        # only the message it was sending unrecorded. (No connection is held while mailing.)
        state = "sent" if outcome.sent else "failed"
        with svc.pool.connection() as conn:
            _record(conn, poll, next(kinds), [(outcome.to, state, outcome.problem)])

    try:
        return _mailer(svc).send(letters, done)
    # Whatever stopped the sending (a cancellation too), the unsent rows are marked; re-raised.
    except BaseException:
        # Not recorded as sent: failed, so that sending again tries them (a message that went
        # out is recorded as it leaves, and is never sent again unless asked).
        with svc.pool.connection() as conn:
            for kind in KINDS:
                _record_unsent(conn, poll, kind, [v for k, v in going if k == kind])
        raise


def _record_unsent(
    conn: psycopg.Connection[Any], poll: Poll, kind: Kind, voters: list[str]
) -> None:
    """Rows of ``voters`` still marked as being sent: failed, the sender having stopped."""
    if not voters:
        return

    def work(cur: psycopg.Cursor[Any]) -> None:
        cur.execute(
            "UPDATE mail SET state = 'failed', detail = 'the sender stopped before it left' "
            "WHERE poll = %s AND kind = %s AND state = 'sending' AND voter = ANY(%s)",
            (poll.uid, kind, voters),
        )

    storage.run_transaction(conn, work)


def _record(
    conn: psycopg.Connection[Any], poll: Poll, kind: Kind, rows: Iterable[tuple[str, str, str]]
) -> None:
    found = list(rows)
    if not found:
        return

    def work(cur: psycopg.Cursor[Any]) -> None:
        cur.execute(
            "UPDATE mail SET state = r.state, detail = r.detail FROM "
            "unnest(%s::text[], %s::text[], %s::text[]) AS r (voter, state, detail) "
            "WHERE mail.poll = %s AND mail.kind = %s AND mail.voter = r.voter",
            ([r[0] for r in found], [r[1] for r in found], [r[2] for r in found], poll.uid, kind),
        )

    storage.run_transaction(conn, work)


def letter(poll: Poll, kind: Kind, voter: str, url: str) -> Letter:
    """The message: the poll's title, description, closing time and the voter's own link."""
    rules = poll.rules
    closes = rules.schedule.closes_at
    when = (
        f"Voting closes {closes:%Y-%m-%d %H:%M %Z}."
        if closes
        else "Voting stays open until the organiser closes the poll."
    )
    if kind == "invitation":
        subject = f"Your invitation to vote: {rules.title}"
        opening = f'You are invited to vote in the poll "{rules.title}".'
    else:
        subject = f"Reminder: please vote in {rules.title}"
        opening = f'You have not voted yet in the poll "{rules.title}".'
    about = rules.description or ""
    privacy = (
        "Your vote is stored apart from your name and hidden among fake votes: whoever reads "
        "the stored votes cannot tell for sure how you voted."
    )
    own = "This link is yours alone: whoever holds it can vote once, as you. Do not forward it."
    text = "\n\n".join(
        part
        for part in [
            "Hello,",
            opening,
            about,
            f"Vote here:\n{url}",
            when,
            own,
            privacy,
        ]
        if part
    )
    html = (
        '<!doctype html><html><body style="font-family: sans-serif; line-height: 1.5">'
        f"<p>Hello,</p><p>{escape(opening)}</p>"
        + (f'<p style="white-space: pre-line">{escape(about)}</p>' if about else "")
        + f'<p><a href="{escape(url)}" style="font-weight: bold">Vote now</a></p>'
        f"<p>{escape(when)}</p><p>{escape(own)}</p>"
        f'<p style="color: #555">{escape(privacy)}</p>'
        f'<p style="color: #555; font-size: small">If the button does not work, copy this '
        f"link into your browser: {escape(url)}</p></body></html>"
    )
    return Letter(to=voter, subject=subject, text=text, html=html)


def progress(svc: Services, name: str) -> dict[str, Any]:
    """Counts per kind and state, and the addresses that failed with the server's words."""
    poll = stored_poll(svc, name)
    with svc.pool.connection() as conn:
        counts = conn.execute(
            "SELECT kind, state, count(*) FROM mail WHERE poll = %s GROUP BY kind, state",
            (poll.uid,),
        ).fetchall()
        failures = conn.execute(
            "SELECT kind, voter, detail FROM mail WHERE poll = %s AND state = 'failed' "
            "ORDER BY voter LIMIT %s",
            (poll.uid, SHOWN_FAILURES),
        ).fetchall()
    states = ("queued", "sending", "sent", "failed", "skipped")
    found: dict[str, Any] = {"configured": configured(svc)}
    if not found["configured"]:
        found["howToConfigure"] = HOW_TO_CONFIGURE
    for kind in KINDS:
        mine: dict[str, Any] = {state: 0 for state in states}
        for k, state, count in counts:
            if k == kind and state in mine:
                mine[state] = int(count)
        mine["failures"] = [
            {"voter": str(v), "problem": str(d)} for k, v, d in failures if k == kind
        ]
        mine["done"] = mine["queued"] == 0 and mine["sending"] == 0
        found[f"{kind}s"] = mine
    return found
