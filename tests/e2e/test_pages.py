"""The web pages in real Chromium: a poll from sign-in to results, as its creator and voters."""

from __future__ import annotations

import base64
import math
import re
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from privpoll.core.results import expected_margin
from tests.e2e.conftest import PHONE, shot, sign_in
from tests.integration.conftest import ADMIN, System, poll_spec

CHOICES = ["pizza", "sushi", "tacos"]
VOTERS = ["ada.lovelace", "alan.turing", "grace.hopper", "edsger.dijkstra", "barbara.liskov"]


def session_payload(cookie: str) -> str:
    """What a Flask session cookie holds (signed, not encrypted: anyone can read it)."""
    payload = cookie.split(".")[1] if cookie.startswith(".") else cookie.split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if cookie.startswith(".") else raw).decode()


def recorded(page: Page) -> list[Response]:
    """Every response the page gets from now on."""
    seen: list[Response] = []

    def keep(response: Response) -> None:
        seen.append(response)

    page.on("response", keep)
    return seen


def replacement(epsilon: float, choices: int = 3) -> float:
    return choices / (math.exp(epsilon) - 1 + choices)


def margin_text(voters: int, p: float = 0.0, fakes: float = 2.0) -> str:
    margin = expected_margin(voters, 3, fakes, p)
    return f"± {margin:.1f} votes (± {round(100 * margin / voters)}% of the voters)"


def fill_new_poll(page: Page, title: str, choices: list[str], voters: list[str]) -> None:
    page.get_by_label("Title").fill(title)
    for i, choice in enumerate(choices):
        page.get_by_label(f"Choice {i + 1}", exact=True).fill(choice)
    page.get_by_label("Eligible voters").fill("\n".join(voters))


def test_a_poll_from_sign_in_to_results(browser: Browser, site: System) -> None:
    creator = browser.new_context()
    page = creator.new_page()
    page.goto(f"{site.url}/polls")
    expect(page).to_have_url(re.compile(r"/signin\?next=/polls$"))
    shot(page, "01-sign-in")
    page.get_by_label("Admin token").fill("not the token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#token-error")).to_contain_text("not the admin token")
    sign_in(page, site)

    page.get_by_role("link", name="New poll").first.click()
    fill_new_poll(page, "Where do we eat on Friday?", CHOICES, VOTERS)
    page.get_by_label("Short name").fill("friday")
    # Rows come and go without a round trip; three choices remain.
    page.get_by_role("button", name="Add a choice").click()
    page.get_by_label("Choice 4", exact=True).fill("salad")
    page.get_by_role("button", name="Remove choice 4").click()
    expect(page.locator(".choice-row")).to_have_count(3)

    # The live preview, computed in the browser, agrees with the server's formula.
    preview = page.locator("#preview")
    expect(preview.locator('[data-preview="voters"]')).to_have_text("5")
    # The default preset is the noise a poll gets when it says nothing: fakes plus ε = 2.5.
    recommended = replacement(2.5)
    expect(preview.locator('[data-preview="margin"]')).to_have_text(margin_text(5, recommended))
    expect(preview.locator('[data-preview="epsilon"]')).to_contain_text("2.50")
    page.get_by_role("radio", name=re.compile("^High privacy")).check()
    expect(preview.locator('[data-preview="epsilon"]')).to_contain_text("1.50")
    expect(preview.locator('[data-preview="margin"]')).to_have_text(
        margin_text(5, replacement(1.5), fakes=3.0)
    )
    page.get_by_role("radio", name=re.compile("^Low privacy")).check()
    expect(page.locator("#randomized")).not_to_be_checked()
    page.get_by_role("radio", name=re.compile("^Medium privacy")).check()
    expect(page.locator("#randomized")).to_be_checked()
    shot(page, "02-new-poll")
    page.get_by_role("button", name="Create the poll").last.click()

    expect(page).to_have_url(f"{site.url}/polls/friday")
    expect(page.get_by_role("heading", name="Where do we eat on Friday?")).to_be_visible()
    expect(page.locator("#turnout")).to_contain_text("0 of 5 voters have voted")
    links = page.locator("input.link-input").evaluate_all("nodes => nodes.map(n => n.value)")
    assert len(links) == 5
    expect(page.get_by_role("button", name="Copy", exact=True).first).to_be_visible()
    shot(page, "03-poll")
    page.get_by_role("link", name="Polls", exact=True).click()
    expect(page.get_by_role("row", name=re.compile("Where do we eat on Friday"))).to_contain_text(
        "0 of 5"
    )
    shot(page, "03-polls-list")
    page.get_by_role("link", name="Where do we eat on Friday?").click()
    invitations = creator.request.get(f"{site.url}/polls/friday/invitations.csv")
    assert invitations.ok
    assert invitations.text().splitlines()[1:] == [
        f"{voter},{link}" for voter, link in zip(VOTERS, links, strict=True)
    ]

    voter_of = {link: unquote(re.search(r"voter=([^&]+)", link)[1]) for link in links}  # type: ignore[index]
    after_vote: list[tuple[str, str]] = []  # (voter, what a response after their vote showed)
    for i, link in enumerate(links[:4]):
        context = browser.new_context()
        ballot = context.new_page()
        ballot.goto(link)
        options = ballot.get_by_role("radio")
        expect(options).to_have_count(3)
        expect(ballot.get_by_text(f"This invitation is for {voter_of[link]}")).to_be_visible()
        if i == 0:
            shot(ballot, "04-vote")
        responses = recorded(ballot)
        ballot.get_by_label(CHOICES[i % 3]).check()
        ballot.get_by_role("button", name="Vote").click()
        expect(ballot.get_by_role("heading", name="Thank you: your vote is in")).to_be_visible()
        if i == 0:
            shot(ballot, "05-voted")
        for response in responses:
            shown = " ".join(f"{k}: {v}" for k, v in response.headers.items())
            if response.ok and "text/html" in response.headers.get("content-type", ""):
                shown += response.text()
            after_vote.append((voter_of[link], shown + " " + response.url))
        for cookie in context.cookies():
            after_vote.append((voter_of[link], session_payload(cookie["value"])))
        context.close()

    again = browser.new_context()
    second = again.new_page()
    second.goto(links[0])
    expect(second.get_by_role("heading", name="You have already voted")).to_be_visible()
    expect(second.get_by_role("radio")).to_have_count(0)
    shot(second, "06-already-voted")
    after_vote.append((voter_of[links[0]], second.content()))
    again.close()

    page.reload()
    expect(page.locator("#turnout")).to_contain_text("4 of 5 voters have voted")
    expect(page.locator("#waiting-list")).to_have_value(voter_of[links[4]])
    page.get_by_text("Close the poll now").click()
    page.get_by_role("button", name="Close the poll").click()
    expect(page.locator(".phase")).to_have_text("Closed")

    page.get_by_role("link", name="See the results").click()
    deadline = time.monotonic() + 60
    facts = page.locator("dl.facts")
    while "4 of 5 eligible" not in facts.inner_text():
        assert time.monotonic() < deadline, facts.inner_text()
        time.sleep(0.5)
        page.reload()
    chart = page.locator("svg.chart")
    expect(chart.locator("rect.bar")).to_have_count(3)
    expect(chart.locator("line.whisker")).to_have_count(9)
    rows = page.locator("table.results tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("th")).to_have_text(CHOICES)
    expect(facts).to_contain_text("Total votes4")
    expect(page.locator("#why-heading + p")).to_contain_text("With 4 votes, each estimate")
    shot(page, "07-results")

    exported = creator.request.get(f"{site.url}/polls/friday/results.json").json()
    assert exported == site.results("friday")
    table = creator.request.get(f"{site.url}/polls/friday/results.csv").text().splitlines()
    assert table[0] == "choice,estimate,ci95_low,ci95_high,stored_ballots"
    assert [line.split(",")[0] for line in table[1:]] == CHOICES

    results_page = page.content()
    assert not any(voter in results_page for voter in VOTERS)
    for voter, shown in after_vote:
        assert voter not in shown, f"a response after {voter}'s vote names them"
    lines = site.logs()
    assert lines
    assert [line for line in lines if any(voter in line for voter in VOTERS)] == []
    creator.close()


def test_pages_read_well_on_a_phone(browser: Browser, site: System) -> None:
    site.create_poll("phone", poll_spec(VOTERS[:2]))
    link = site.http.get("/api/v1/polls/phone/invitations", headers=site.admin).json()[0]["url"]
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, site)
    for path, name in [
        ("/polls/new", "10-phone-new-poll"),
        ("/polls/phone", "11-phone-poll"),
        ("/polls/phone/results", "13-phone-results"),
    ]:
        page.goto(f"{site.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} scrolls sideways ({width}px)"
        shot(page, name)
    page.goto(link)
    expect(page.get_by_role("radio")).to_have_count(3)
    shot(page, "12-phone-vote")
    context.close()


def test_forms_show_the_apis_messages_next_to_the_fields(
    admin: BrowserContext, site: System
) -> None:
    page = admin.new_page()
    page.goto(f"{site.url}/polls/new")

    def submit() -> None:
        page.get_by_role("button", name="Create the poll").last.click()
        page.wait_for_load_state()

    def error_of(field_id: str) -> str:
        field = page.locator(".field", has=page.locator(f"#{field_id}")).last
        expect(page.locator(f"#{field_id}")).to_have_attribute("aria-invalid", "true")
        return field.locator(".error").inner_text()

    fill_new_poll(page, "", ["pizza", "sushi"], ["ada", "alan"])
    submit()
    assert "at least 1 character" in error_of("title")
    expect(page.get_by_label("Choice 1", exact=True)).to_have_value("pizza")
    expect(page.get_by_label("Eligible voters")).to_have_value("ada\nalan")
    shot(page, "08-form-errors")

    fill_new_poll(page, "Lunch", ["pizza", "pizza"], ["ada", "alan"])
    submit()
    assert "choices must be unique: 'pizza' appears twice" in error_of("choice-0")
    expect(page.get_by_label("Title")).to_have_value("Lunch")

    page.get_by_label("Choice 2", exact=True).fill("")
    submit()
    assert "at least 2 items" in error_of("choice-0")
    expect(page.get_by_label("Choice 1", exact=True)).to_have_value("pizza")

    fill_new_poll(page, "Lunch", ["pizza", "sushi"], ["ada"])
    page.get_by_label("CSV file of voters").set_input_files(
        {"name": "voters.csv", "mimeType": "text/csv", "buffer": b'voter\nalan\n"grace,\n'}
    )
    submit()
    assert "the uploaded file: line" in error_of("voters")
    assert "quote" in error_of("voters")
    expect(page.get_by_label("Eligible voters")).to_have_value("ada")

    page.get_by_label("Eligible voters").fill("ada, alan, grace")
    submit()
    assert "line 1 holds 3 values" in error_of("voters")
    expect(page.get_by_label("Eligible voters")).to_have_value("ada, alan, grace")

    page.get_by_label("Eligible voters").fill("ada\nalan")
    page.get_by_label("Closes at").fill("2020-01-01T12:00")
    submit()
    assert "closesAt is in the past" in error_of("closesAt")
    expect(page.get_by_label("Closes at")).to_have_value("2020-01-01T12:00")
    expect(page.get_by_label("Title")).to_have_value("Lunch")
    expect(page.get_by_label("Choice 2", exact=True)).to_have_value("sushi")
    expect(page.locator(".error-summary")).to_be_visible()
    shot(page, "09-form-error-closes-at")

    # Fixed, the same form creates the poll; its name is made from the title.
    page.get_by_label("Closes at").fill("")
    submit()
    expect(page).to_have_url(f"{site.url}/polls/lunch")


def test_a_voter_meets_friendly_pages_for_every_dead_end(browser: Browser, site: System) -> None:
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    site.create_poll("later", poll_spec(["ada"], schedule={"opensAt": later}))
    site.create_poll("shut", poll_spec(["ada"]))
    site.create_poll("secret", poll_spec(["ada"], results={"visibility": "afterClose"}))
    links = {
        name: site.http.get(f"/api/v1/polls/{name}/invitations", headers=site.admin).json()[0][
            "url"
        ]
        for name in ("later", "shut", "secret")
    }
    site.close("shut")
    context = browser.new_context()
    page = context.new_page()
    cases = [
        (links["later"], "This poll is not open yet", "14-vote-not-open"),
        (links["shut"], "This poll is closed", "15-vote-closed"),
        (
            links["secret"].replace("token=", "token=x"),
            "This invitation link does not work",
            "16-vote-invalid",
        ),
        (f"{site.url}/vote/secret", "This invitation link does not work", None),
        (f"{site.url}/vote/nope?voter=ada&token=t", "There is no such poll", None),
        (
            f"{site.url}/polls/secret/results",
            "The results come after the poll closes",
            "17-results-later",
        ),
    ]
    for url, heading, name in cases:
        page.goto(url)
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
        if name:
            shot(page, name)

    # The choices come in a new order on (almost) every load of the voting page.
    orders = set()
    for _ in range(8):
        page.goto(links["secret"])
        orders.add(tuple(page.get_by_role("radio").evaluate_all("n => n.map(r => r.value)")))
    assert len(orders) > 1
    # Keyboard only: tab to the choices, pick one with the space bar, submit with Enter.
    radio = page.get_by_role("radio").first
    for _ in range(10):
        page.keyboard.press("Tab")
        if radio.evaluate("r => r === document.activeElement"):
            break
    page.keyboard.press("Space")
    expect(radio).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Thank you: your vote is in")).to_be_visible()
    context.close()


def test_the_pages_work_without_javascript(browser: Browser, site: System) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site)
    page.goto(f"{site.url}/polls/new")
    fill_new_poll(page, "No script needed", ["tea", "coffee"], ["ada", "alan"])
    page.get_by_label("Choice 3", exact=True).fill("water")
    page.get_by_role("button", name="Add a choice").click()
    expect(page.locator(".choice-row")).to_have_count(4)
    page.get_by_role("button", name="Remove choice 4").click()
    expect(page.locator(".choice-row")).to_have_count(3)
    expect(page.get_by_label("Choice 3", exact=True)).to_have_value("water")
    page.get_by_role("button", name="Update this preview").click()
    expect(page.locator('[data-preview="voters"]')).to_have_text("2")
    expect(page.locator('[data-preview="margin"]')).to_contain_text("±")
    expect(page.get_by_role("button", name="Copy", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Create the poll").last.click()
    expect(page).to_have_url(f"{site.url}/polls/no-script-needed")
    expect(page.get_by_role("button", name="Copy", exact=True).first).to_be_hidden()
    link = page.locator("input.link-input").first.input_value()
    page.goto(link)
    page.get_by_label("coffee").check()
    page.get_by_role("button", name="Vote").click()
    expect(page.get_by_role("heading", name="Thank you: your vote is in")).to_be_visible()
    context.close()


def test_no_form_is_taken_without_its_token_and_admin_pages_need_a_session(
    site: System,
) -> None:
    site.create_poll("guarded", poll_spec(["ada"]))
    link = site.http.get("/api/v1/polls/guarded/invitations", headers=site.admin).json()[0]
    anonymous = site.http
    for path in ("/polls", "/polls/new", "/polls/guarded", "/polls/guarded/invitations.csv"):
        response = anonymous.get(path)
        assert response.status_code == 302, path
        assert response.headers["location"] == f"/signin?next={path}"

    with httpx.Client(base_url=site.url) as browserlike:
        form = browserlike.get("/signin")
        cookie = form.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Secure" not in cookie  # plain http here; https public URLs get Secure
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
        refused = browserlike.post("/signin", data={"token": ADMIN})
        assert refused.status_code == 403
        signed = browserlike.post("/signin", data={"token": ADMIN, "csrf": csrf})
        assert signed.status_code == 303
        assert browserlike.get("/polls").status_code == 200
        forms: list[tuple[str, dict[str, Any]]] = [
            ("/polls/guarded/close", {}),
            ("/polls/guarded/close", {"csrf": "forged"}),
            ("/polls/new", {"title": "sneaky", "choice": ["a", "b"], "voters": "ada"}),
            ("/signout", {}),
            ("/vote/guarded", {"voter": "ada", "token": link["token"], "choice": "pizza"}),
        ]
        for path, data in forms:
            response = browserlike.post(path, data=data)
            assert response.status_code == 403, path
            assert "This form was refused" in response.text
        assert site.http.get("/api/v1/polls/guarded").json()["phase"] == "Open"
        assert site.http.get("/api/v1/polls/sneaky").status_code == 404
        # The refused vote was not counted: the invitation still works.
        assert site.vote("guarded", "ada", link["token"], "pizza").status_code == 202
