"""Sending e-mail: one SMTP connection per batch, STARTTLS when offered, retries with backoff.

Python's own ``smtplib`` and ``email`` speak everything needed here (SMTP, SMTPS, STARTTLS,
AUTH, multipart messages) and cooperate with the ingest's gevent workers (patched sockets);
``tenacity`` times the retries of temporary failures. A failure is temporary when the server
says so (a 4xx reply) or the connection broke; a 5xx reply for an address is permanent and
is reported for that address, never retried.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

TIMEOUT = 30.0
ATTEMPTS = 5


class MailSetupError(ValueError):
    """PRIVPOLL_SMTP_URL or PRIVPOLL_MAIL_FROM cannot be used as written."""


class TemporaryFailure(Exception):
    """The server or the network asked to try again later."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    tls: bool  # smtps://: TLS from the first byte; smtp:// upgrades with STARTTLS if offered
    user: str = ""
    password: str = ""

    @classmethod
    def from_url(cls, url: str) -> Server:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise MailSetupError(
                "PRIVPOLL_SMTP_URL must start with smtp:// or smtps://, e.g. "
                "smtp://user:password@mail.example.org:587"
            )
        if not parts.hostname:
            raise MailSetupError("PRIVPOLL_SMTP_URL names no host")
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
        except ValueError as error:
            raise MailSetupError(f"PRIVPOLL_SMTP_URL has a bad port ({error})") from error
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "smtps",
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )


@dataclass(frozen=True)
class Letter:
    """One message to one address: plain text and HTML of the same words."""

    to: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Outcome:
    to: str
    sent: bool
    problem: str = ""  # the server's words when a permanent failure refused the address


def compose(sender: str, letter: Letter) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = letter.to
    message["Subject"] = letter.subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    message.set_content(letter.text)
    message.add_alternative(letter.html, subtype="html")
    return message


def _is_temporary(error: BaseException) -> bool:
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    return isinstance(error, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError))


class Mailer:
    def __init__(self, url: str, sender: str, *, attempts: int = ATTEMPTS) -> None:
        if not sender or "@" not in sender:
            raise MailSetupError("set PRIVPOLL_MAIL_FROM to the sender's address")
        self.server = Server.from_url(url)
        self.sender = sender
        self.attempts = attempts

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if server.tls:
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)
        try:
            smtp.ehlo()
            if not server.tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            if server.user:
                smtp.login(server.user, server.password)
        # A half-open session is closed on any failure, a cancellation included.
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(
        self, letters: Iterable[Letter], done: Callable[[Outcome], None] | None = None
    ) -> list[Outcome]:
        """Send each letter (one connection for all, reopened after a failure); each
        temporary failure is retried with backoff, ``attempts`` times in all per letter."""
        outcomes = []
        smtp: smtplib.SMTP | None = None

        @retry(
            retry=retry_if_exception_type(TemporaryFailure),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(initial=0.5, max=30),
            reraise=True,
        )
        def deliver(letter: Letter) -> Outcome:
            nonlocal smtp
            try:
                if smtp is None:
                    smtp = self._connect()
                smtp.send_message(compose(self.sender, letter))
            except smtplib.SMTPRecipientsRefused as error:
                code, words = next(iter(error.recipients.values()))
                if 400 <= code < 500:
                    raise TemporaryFailure(_words(code, words)) from error
                return Outcome(letter.to, False, _words(code, words))
            except (smtplib.SMTPException, OSError) as error:
                _close(smtp)
                smtp = None
                if _is_temporary(error):
                    raise TemporaryFailure(str(error)) from error
                if isinstance(error, smtplib.SMTPResponseException):
                    return Outcome(letter.to, False, _words(error.smtp_code, error.smtp_error))
                return Outcome(letter.to, False, str(error))
            return Outcome(letter.to, True)

        try:
            for letter in letters:
                try:
                    outcome = deliver(letter)
                except TemporaryFailure as error:
                    outcome = Outcome(
                        letter.to, False, f"gave up after {self.attempts} tries: {error}"
                    )
                outcomes.append(outcome)
                if done is not None:
                    done(outcome)
        finally:
            _close(smtp)
        return outcomes


def _words(code: int, words: bytes | str) -> str:
    text = words.decode(errors="replace") if isinstance(words, bytes) else words
    return f"{code} {text}".strip()


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
