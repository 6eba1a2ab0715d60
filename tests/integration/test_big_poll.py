"""A poll with thousands of voters, as its creator meets it on the pages and in the CSV."""

from __future__ import annotations

import csv
import io
import re

import httpx

from tests.integration.conftest import ADMIN, System, poll_spec

VOTERS = [f"voter-{i:05d}@example.org" for i in range(2_500)]


def signed_in(system: System) -> httpx.Client:
    browser = httpx.Client(base_url=system.url, timeout=60)
    page = browser.get("/signin").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    answer = browser.post("/signin", data={"csrf": found[1], "token": ADMIN})
    assert answer.status_code == 303, answer.text
    return browser


def test_the_pages_of_a_big_poll_list_every_invitation_once(system: System) -> None:
    system.create_poll("big", poll_spec(VOTERS))
    tokens = system.invitations("big")
    assert sorted(tokens) == VOTERS
    voted = VOTERS[:3]
    for voter in voted:
        assert system.vote("big", voter, tokens[voter], "pizza").status_code == 202
    browser = signed_in(system)

    # The CSV comes in chunks of a thousand rows: every voter once, in order, with the
    # same link as the API's list.
    download = browser.get("/polls/big/invitations.csv")
    assert download.status_code == 200
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["voter", "url"]
    assert [voter for voter, _ in rows[1:]] == VOTERS
    for voter, url in rows[1:]:
        assert url.endswith(f"&token={tokens[voter]}")

    # The poll page shows the first 300 links, says how many more the CSV has, and lists
    # everyone who has not voted yet.
    page = browser.get("/polls/big").text
    links = re.findall(r'value="([^"]+)" id="link-\d+"', page)
    assert [url for _, url in rows[1:301]] == [link.replace("&amp;", "&") for link in links]
    assert f"{len(VOTERS) - 300} more links are in the CSV download" in page
    waiting = re.search(r'<textarea[^>]*id="waiting-list"[^>]*>([^<]*)</textarea>', page)
    assert waiting is not None
    assert waiting[1].split("\n") == VOTERS[3:]
