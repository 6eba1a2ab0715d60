"""Voters behind one address: a school, a company or a conference hall votes through one NAT
address, so valid votes are never limited per address; guessing is (tests/unit/test_ratelimit)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from privpoll.local.embedded import NatsServer, PostgresServer
from privpoll.settings import Settings
from tests.integration.conftest import CHOICES, System, poll_spec

VOTES = 1000


@pytest.fixture
def defaults(tmp_path: Path, nats: NatsServer, postgres: PostgresServer) -> Iterator[System]:
    """privpoll up with the limits it ships with (System turns the guess limit off)."""
    running = System(
        tmp_path / "system",
        nats,
        postgres,
        env={"PRIVPOLL_GUESS_RATE_LIMIT": Settings().guess_rate_limit},
    )
    running.start()
    yield running
    running.stop()


def test_a_thousand_votes_from_one_address_within_a_minute_are_all_taken(
    defaults: System,
) -> None:
    system = defaults
    voters = [f"voter-{i:04d}" for i in range(2 * VOTES)]
    system.create_poll("hall", poll_spec(voters, duplicates="prevent"))
    tokens = system.invitations("hall")
    through_api, through_page = voters[:VOTES], voters[VOTES:]
    local = threading.local()

    def browser() -> httpx.Client:
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=system.url, timeout=30)
        return client

    def by_api(voter: str) -> int:
        return system.vote("hall", voter, tokens[voter], CHOICES[hash(voter) % 3]).status_code

    def by_page(voter: str) -> int:
        http = browser()
        page = http.get("/vote/hall", params={"voter": voter, "token": tokens[voter]})
        if page.status_code != 200:
            return page.status_code
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        form = {"csrf": found[1], "voter": voter, "token": tokens[voter], "choice": "sushi"}
        return http.post("/vote/hall", data=form).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        api = Counter(pool.map(by_api, through_api))
        api_seconds = time.monotonic() - started
        pages = Counter(pool.map(by_page, through_page))
    seconds = time.monotonic() - started
    print(
        f"\none address: {VOTES} votes through the API in {api_seconds:.1f} s: {dict(api)}; "
        f"{VOTES} through the voting page in {seconds - api_seconds:.1f} s: {dict(pages)}"
    )
    assert api == {202: VOTES}
    # The page answers an accepted vote with a redirect to its "thank you" page.
    assert pages == {303: VOTES}
    # Guessing from the same address is still limited: the default bucket runs dry.
    forged = Counter(
        system.vote("no-such-poll", "someone", "forged", "pizza").status_code for _ in range(200)
    )
    assert set(forged) == {404, 429}, forged
