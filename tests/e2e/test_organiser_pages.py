"""The organiser's new buttons in real Chromium, desktop and phone: e-mail invitations and
reminders (to a real SMTP server, aiosmtpd), a reissued link, a deleted poll, a description,
results that say what they know, and the privacy panel's warning."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, BrowserContext, Page, expect

from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from tests.e2e.conftest import PHONE, shot, sign_in
from tests.e2e.test_pages import fill_new_poll
from tests.integration.conftest import System
from tests.integration.test_mail import SENDER, Mailbox, link_of

VOTERS = ["ada@example.org", "alan@example.org", "grace@example.org", "nobody@example.org"]
DESCRIPTION = "Friday lunch for the whole team.\nWe book on Thursday."


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox(refuse={"nobody@example.org"})
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module")
def mailing_site(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    mailbox: tuple[Mailbox, int],
) -> Iterator[System]:
    root = tmp_path_factory.mktemp("e2e-mail")
    nats = NatsServer(root / "nats")
    nats.start()
    env = {"PRIVPOLL_SMTP_URL": f"smtp://127.0.0.1:{mailbox[1]}", "PRIVPOLL_MAIL_FROM": SENDER}
    running = System(root / "system", nats, postgres, env=env)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        nats.stop()


def wait_for_text(page: Page, selector: str, text: str, timeout: float = 60) -> None:
    """Until the element holds ``text`` (the page reloads itself when the mail is out)."""
    deadline = time.monotonic() + timeout
    while text not in (page.locator(selector).text_content() or ""):
        assert time.monotonic() < deadline, page.locator(selector).text_content()
        time.sleep(0.5)


def test_an_organiser_mails_reissues_and_deletes(
    browser: Browser, mailing_site: System, mailbox: tuple[Mailbox, int]
) -> None:
    site, (box, _) = mailing_site, mailbox
    creator = browser.new_context()
    page = creator.new_page()
    sign_in(page, site)
    page.goto(f"{site.url}/polls/new")
    # A pasted list with a voter twice is merged, with a note; the description is kept.
    fill_new_poll(page, "Team lunch", ["pizza", "sushi", "tacos"], [*VOTERS, "ada@example.org"])
    page.get_by_label("Description").fill(DESCRIPTION)
    page.get_by_label("Short name").fill("team")
    page.get_by_role("button", name="Create the poll").last.click()
    expect(page).to_have_url(re.compile(r"/polls/team\?merged=1"))
    expect(page.locator("#merged-note")).to_contain_text("1 voter id was listed more than once")
    expect(page.locator("#turnout")).to_contain_text("0 of 4 voters")
    expect(page.locator("p.description")).to_contain_text("Friday lunch for the whole team.")

    page.get_by_role("button", name="E-mail every voter their link").click()
    expect(page.locator("#mail-notice")).to_contain_text("4 invitations are on the way")
    wait_for_text(page, "#mail-invitations", "3 sent, 0 waiting to go, 1 failed")
    failures = page.locator("#invitations-failures")
    expect(failures).to_contain_text("nobody@example.org")
    expect(failures).to_contain_text("550")
    shot(page, "20-poll-mail-sent")

    links = {address: link_of(box.to(address)[0]) for address in VOTERS[:3]}
    assert all(len(box.to(a)) == 1 for a in VOTERS[:3])
    voter = browser.new_context()
    ballot = voter.new_page()
    ballot.goto(links["ada@example.org"])
    expect(ballot.locator("p.description")).to_contain_text("We book on Thursday.")
    expect(ballot.locator("#privacy-hint")).to_contain_text("does see it for the moment")
    shot(ballot, "21-vote-with-description")
    ballot.get_by_label("pizza").check()
    ballot.get_by_role("button", name="Vote").click()
    expect(ballot.get_by_role("heading", name="Thank you: your vote is in")).to_be_visible()
    voter.close()

    # Reminders reach the two who have not voted (and fail again for the bad address).
    page.reload()
    page.get_by_role("button", name=re.compile(r"^Remind the \d+ who have not voted")).click()
    expect(page.locator("#mail-notice")).to_contain_text("3 reminders are on the way")
    wait_for_text(page, "#mail-reminders", "2 sent, 0 waiting to go, 1 failed")
    assert {a for a in VOTERS if box.to(a, "Reminder")} == {"alan@example.org", "grace@example.org"}

    # Grace lost her link: a new one, and the old one stops working.
    page.get_by_role("button", name="New link for grace@example.org").click()
    expect(page.locator("#reissued-note")).to_contain_text("A new link for grace@example.org")
    shot(page, "22-poll-reissued")
    fresh = page.get_by_label("Invitation link for grace@example.org").input_value()
    assert fresh != links["grace@example.org"]
    stranger = browser.new_context()
    old = stranger.new_page()
    old.goto(links["grace@example.org"])
    expect(old.get_by_role("heading", name="This invitation link does not work")).to_be_visible()
    old.goto(fresh)
    old.get_by_label("sushi").check()
    old.get_by_role("button", name="Vote").click()
    expect(old.get_by_role("heading", name="Thank you: your vote is in")).to_be_visible()
    stranger.close()

    # Closed, the results say so in words: no winner can be called from two votes.
    page.goto(f"{site.url}/polls/team")
    page.get_by_text("Close the poll now").click()
    page.get_by_role("button", name="Close the poll").click()
    expect(page.locator("#about-heading + dl")).to_contain_text("no more votes are taken")
    expect(page.locator("#about-heading + dl")).not_to_contain_text("when you close it")
    page.goto(f"{site.url}/polls/team/results")
    deadline = time.monotonic() + 60
    while "2 of 4 eligible" not in page.locator("dl.facts").inner_text():
        assert time.monotonic() < deadline, page.locator("dl.facts").inner_text()
        time.sleep(0.5)
        page.reload()
    expect(page.locator("#verdict")).to_contain_text("No winner can be called")
    expect(page.locator("svg.chart text.value")).to_have_count(3)
    for row in page.locator("table.results tbody tr").all():
        estimate = float(row.locator("td").nth(0).inner_text())
        low, high = (float(v) for v in row.locator("td").nth(1).inner_text().split(" \u2013 "))
        assert low <= estimate <= high
        assert low < high
        assert 0 <= estimate <= 2
    shot(page, "23-results-verdict")

    # Delete: the name must be typed; then the list says what was erased.
    page.goto(f"{site.url}/polls/team")
    page.get_by_text("Delete the poll").first.click()
    page.get_by_label(re.compile("Type the poll's name")).fill("teem")
    page.get_by_role("button", name="Delete the poll").click()
    expect(page.locator("#confirm-error")).to_contain_text("nothing was deleted")
    page.get_by_label(re.compile("Type the poll's name")).fill("team")
    shot(page, "24-poll-delete")
    page.get_by_role("button", name="Delete the poll").click()
    expect(page).to_have_url(f"{site.url}/polls")
    expect(page.locator("#notice")).to_contain_text("Poll team deleted")
    expect(page.locator("#notice")).to_contain_text("4 invitation links stop working")
    shot(page, "25-polls-after-delete")
    assert site.http.get("/api/v1/polls/team").status_code == 404
    creator.close()


def test_the_new_parts_read_well_on_a_phone(browser: Browser, mailing_site: System) -> None:
    site = mailing_site
    site.create_poll(
        "phone-mail",
        {
            "title": "A rather long poll title that has to wrap on a small screen",
            "description": "Pick one. The results are shown to everyone once it closes.",
            "choices": ["pizza", "sushi", "tacos"],
            "voters": {"ids": VOTERS[:2]},
        },
    )
    context: BrowserContext = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, site)
    page.goto(f"{site.url}/polls/phone-mail")
    expect(page.get_by_role("button", name="E-mail every voter their link")).to_be_enabled()
    for path, name in [
        ("/polls/phone-mail", "26-phone-poll-mail"),
        ("/polls/phone-mail/results", "27-phone-results"),
    ]:
        page.goto(f"{site.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} scrolls sideways ({width}px)"
        shot(page, name)
    # Three voters cannot carry the recommended noise: the panel says so, in words.
    page.goto(f"{site.url}/polls/new")
    fill_new_poll(page, "Tiny", ["a", "b", "c"], ["x@example.org", "y@example.org", "z"])
    warning = page.locator('[data-preview="warning"]')
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("could not tell the choices apart")
    expect(page.locator('[data-preview="thief"]')).to_contain_text(
        "If someone stole the database, the best they could say about one voter"
    )
    page.locator('[data-preview="thief"]').scroll_into_view_if_needed()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the new poll form scrolls sideways ({width}px)"
    shot(page, "28-phone-privacy-warning")
    context.close()
