"""Invitations and reminders by e-mail, against a real SMTP server (aiosmtpd) started here.

Every listed address gets exactly one invitation whose link votes; sending again mails
nobody twice; reminders reach exactly the voters who have not voted; a temporary refusal is
retried and delivered once, a permanent one is reported for its address.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from tests.integration.conftest import ADMIN, System, poll_spec

pytestmark = pytest.mark.integration

ADDRESSES = ["ada@example.org", "alan@example.org", "grace@example.org", "edsger@example.org"]
SENDER = "polls@example.org"


class Mailbox:
    """An aiosmtpd handler that keeps every message, refuses some recipients for good and
    others once (a 451: try again later)."""

    def __init__(self, refuse: set[str] = frozenset(), once: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = set(refuse)
        self.once = set(once)
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox here"
        if address in self.once:
            self.once.discard(address)
            return "451 4.3.0 busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str, subject: str = "") -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address and subject in str(m["Subject"])]


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox(refuse={"nobody@example.org"}, once={"alan@example.org"})
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def mailed_system(tmp_path: Path, nats: NatsServer, postgres: PostgresServer, port: int) -> System:
    env = {"PRIVPOLL_SMTP_URL": f"smtp://127.0.0.1:{port}", "PRIVPOLL_MAIL_FROM": SENDER}
    system = System(tmp_path / "system", nats, postgres, env=env)
    system.start()
    return system


def wait_done(system: System, name: str, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        found = system.http.get(f"/api/v1/polls/{name}/mail", headers=system.admin).json()
        if found[kind]["done"]:
            return dict(found[kind])
        assert time.monotonic() < deadline, found
        time.sleep(0.3)


def link_of(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert html is not None, "a message has an HTML part beside the plain text"
    found = re.search(r"https?://\S+/vote/\S+", plain.get_content())
    assert found is not None
    assert found[0].replace("&", "&amp;") in html.get_content()
    return found[0]


def vote_with(system: System, link: str, choice: str) -> int:
    parts = urlsplit(link)
    query = parse_qs(parts.query)
    name = parts.path.rsplit("/", 1)[-1]
    voter, token = unquote(query["voter"][0]), query["token"][0]
    return system.vote(name, voter, token, choice).status_code


def test_invitations_and_reminders_reach_exactly_who_they_should(
    tmp_path: Path,
    nats: NatsServer,
    postgres: PostgresServer,
    mailbox: tuple[Mailbox, int],
) -> None:
    box, port = mailbox
    system = mailed_system(tmp_path, nats, postgres, port)
    try:
        voters = [*ADDRESSES, "bob", "nobody@example.org"]
        spec = poll_spec(voters, description="Friday lunch, 12:30 at the usual place")
        system.create_poll("mail-lunch", spec)
        sent = system.http.post("/api/v1/polls/mail-lunch/invitations/send", headers=system.admin)
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"queued": 5, "skipped": ["bob"], "alreadySent": 0}
        progress = wait_done(system, "mail-lunch", "invitations")
        assert progress["sent"] == 4
        assert progress["failed"] == 1
        assert progress["failures"][0]["voter"] == "nobody@example.org"
        assert "550" in progress["failures"][0]["problem"]

        links = {}
        for address in ADDRESSES:
            (message,) = box.to(address)  # exactly one each; alan's after a 451 and a retry
            assert message["From"] == SENDER
            assert "Where do we eat on Friday?" in str(message["Subject"])
            plain = message.get_body(preferencelist=("plain",))
            assert plain is not None
            assert "Friday lunch, 12:30" in plain.get_content()
            links[address] = link_of(message)

        # Sending again mails nobody twice.
        again = system.http.post("/api/v1/polls/mail-lunch/invitations/send", headers=system.admin)
        assert again.json()["queued"] == 1  # only the address that failed is tried again
        wait_done(system, "mail-lunch", "invitations")
        assert all(len(box.to(a)) == 1 for a in ADDRESSES)

        # Two vote with their links; the reminders go to the other two only.
        for address in ADDRESSES[:2]:
            assert vote_with(system, links[address], "pizza") == 202
        # By the CLI, which follows the sending to its end.
        env = {**os.environ, "PRIVPOLL_URL": system.url, "PRIVPOLL_ADMIN_TOKEN": ADMIN}
        cli = subprocess.run(
            [sys.executable, "-m", "privpoll", "poll", "remind", "mail-lunch"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        # Two non-voters and the failing address, which fails again.
        assert cli.stdout.splitlines()[0] == "3 reminders queued"
        assert cli.stdout.splitlines()[-1] == "2 sent, 0 waiting, 1 failed"
        assert "not delivered to nobody@example.org: 550" in cli.stderr
        assert wait_done(system, "mail-lunch", "reminders")["sent"] == 2
        got = {a for a in ADDRESSES if box.to(a, "Reminder")}
        assert got == set(ADDRESSES[2:])
        for address in ADDRESSES[2:]:
            (reminder,) = box.to(address, "Reminder")
            assert vote_with(system, link_of(reminder), "sushi") == 202

        # No log line names a voter beside anything else the mail did.
        lines = [line for line in system.logs() if "mail" in line]
        assert not [line for line in lines if any(a in line for a in ADDRESSES)]
    finally:
        system.stop()


def test_without_smtp_the_api_says_how_to_set_it_up(system: System) -> None:
    system.create_poll("plain", poll_spec(["ada@example.org"]))
    answer = system.http.post("/api/v1/polls/plain/invitations/send", headers=system.admin)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "mail_not_configured"
    assert "PRIVPOLL_SMTP_URL" in answer.json()["error"]["message"]
    progress = system.http.get("/api/v1/polls/plain/mail", headers=system.admin).json()
    assert progress["configured"] is False


class TlsMailbox(Mailbox):
    """Keeps, beside each message, whether its session was encrypted and signed in."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[tuple[bool, bool]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        return await super().handle_DATA(server, session, envelope)


def test_starttls_and_sign_in_when_the_server_offers_them(
    tmp_path: Path,
    nats: NatsServer,
    postgres: PostgresServer,
    localhost_certificate: tuple[Path, Path],
) -> None:
    cert, key = localhost_certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"polls",
            b"s3cret pass",
        )
        return AuthResult(success=ok)

    box = TlsMailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    env = {
        "PRIVPOLL_SMTP_URL": f"smtp://polls:s3cret%20pass@127.0.0.1:{port}",
        "PRIVPOLL_MAIL_FROM": SENDER,
        # The test's certificate is the only one trusted: an unchecked TLS would not do.
        "SSL_CERT_FILE": str(cert),
    }
    system = System(tmp_path / "system", nats, postgres, env=env)
    system.start()
    try:
        system.create_poll("tls", poll_spec(["ada@example.org"]))
        sent = system.http.post("/api/v1/polls/tls/invitations/send", headers=system.admin)
        assert sent.status_code == 202, sent.text
        progress = wait_done(system, "tls", "invitations")
        assert (progress["sent"], progress["failed"]) == (1, 0), progress
        assert len(box.to("ada@example.org")) == 1
        assert box.sessions == [(True, True)]
    finally:
        system.stop()
        controller.stop()
