"""The SMTP settings as people write them, and a message's two parts."""

from __future__ import annotations

import pytest

from privpoll.service.mail import Letter, Mailer, MailSetupError, Server, compose


def test_smtp_urls_as_people_write_them() -> None:
    plain = Server.from_url("smtp://mail.example.org")
    assert (plain.host, plain.port, plain.tls, plain.user) == ("mail.example.org", 25, False, "")
    tls = Server.from_url("smtps://polls%40example.org:p%40ss@mail.example.org")
    assert (tls.port, tls.tls, tls.user, tls.password) == (465, True, "polls@example.org", "p@ss")
    assert Server.from_url("smtp://u:p@mail.example.org:587").port == 587
    for wrong, words in [
        ("http://mail.example.org", "must start with smtp:// or smtps://"),
        ("smtp://", "names no host"),
        ("smtp://mail.example.org:port", "bad port"),
    ]:
        with pytest.raises(MailSetupError, match=words):
            Server.from_url(wrong)
    with pytest.raises(MailSetupError, match="PRIVPOLL_MAIL_FROM"):
        Mailer("smtp://mail.example.org", "")


def test_a_message_has_plain_text_and_html() -> None:
    letter = Letter(to="ada@example.org", subject="Vote", text="Hello\nhttp://x/v", html="<p>x</p>")
    message = compose("polls@example.org", letter)
    assert message["To"] == "ada@example.org"
    assert message["Message-ID"].endswith("@example.org>")
    kinds = [part.get_content_type() for part in message.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
