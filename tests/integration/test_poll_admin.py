"""An organiser's fixes: a voter's link reissued, a poll deleted, results that say what is
still on its way (against a running `privpoll up`, real NATS and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import pytest

from privpoll.db import storage
from tests.integration.conftest import System, poll_spec

pytestmark = pytest.mark.integration

VOTERS = ["ada@example.org", "alan@example.org", "grace@example.org"]


def reissue(system: System, name: str, voter: str) -> dict[str, str]:
    response = system.http.post(
        f"/api/v1/polls/{name}/voters/{quote(voter, safe='')}/reissue", headers=system.admin
    )
    assert response.status_code == 200, response.text
    found: dict[str, str] = response.json()
    return found


def test_a_reissued_link_replaces_the_old_one_and_never_votes_twice(system: System) -> None:
    system.create_poll("fix", poll_spec(VOTERS, mixing={"minBatch": 1, "maxWait": "1s"}))
    old = system.invitations("fix")
    new = reissue(system, "fix", VOTERS[0])
    assert new["token"] != old[VOTERS[0]]
    assert new["url"].endswith(f"&token={new['token']}")
    assert system.invitations("fix")[VOTERS[0]] == new["token"]
    # The others keep their links.
    assert {v: t for v, t in system.invitations("fix").items() if v != VOTERS[0]} == {
        v: t for v, t in old.items() if v != VOTERS[0]
    }
    # The old link stops at once (every worker within its registry check, about a second).
    deadline = time.monotonic() + 3
    while (refused := system.vote("fix", VOTERS[0], old[VOTERS[0]], "pizza")).status_code != 403:
        assert refused.status_code == 202 or time.monotonic() < deadline, refused.text
        assert refused.status_code != 202, "the old link voted after it was reissued"
        time.sleep(0.1)
    assert refused.json()["error"]["code"] == "invalid_token"
    assert system.vote("fix", VOTERS[0], new["token"], "pizza").status_code == 202

    # A voter who voted and then gets a new link still cannot vote again.
    assert system.vote("fix", VOTERS[1], old[VOTERS[1]], "sushi").status_code == 202
    again = reissue(system, "fix", VOTERS[1])
    second = system.vote("fix", VOTERS[1], again["token"], "tacos")
    assert second.status_code == 409, second.text

    unknown = system.http.post(
        "/api/v1/polls/fix/voters/nobody/reissue", headers=system.admin
    ).json()
    assert unknown["error"]["code"] == "voter_not_found"
    # The access log shows the reissue path without the voter in it.
    lines = system.logs()
    assert [line for line in lines if "/voters/-/reissue" in line]
    assert not [line for line in lines if any(voter in line for voter in VOTERS)]


def test_results_count_votes_still_on_their_way(system: System) -> None:
    # Batches of 50: three votes stay with the sinks, mixing, until the poll closes.
    system.create_poll("held", poll_spec(VOTERS, mixing={"minBatch": 50, "maxWait": "1h"}))
    tokens = system.invitations("held")
    for voter in VOTERS:
        assert system.vote("held", voter, tokens[voter], "pizza").status_code == 202
    found = system.results("held")
    assert found["phase"] == "Open"
    assert found["votes"]["total"] + found["pending"] == 3
    assert found["pending"] > 0
    system.close("held")
    deadline = time.monotonic() + 60
    while (after := system.results("held"))["pending"]:
        assert time.monotonic() < deadline, after
        time.sleep(0.5)
    assert after["votes"]["total"] == 3
    assert after["verdict"]["message"]
    for row in after["choices"]:
        lo, hi = row["ci95"]
        assert lo < hi
        assert lo <= row["estimate"] <= hi
        assert 0 <= row["estimate"] <= 3
        assert "rawEstimate" in row


def test_deleting_a_poll_erases_it_and_says_what_went(system: System) -> None:
    system.create_poll("gone", poll_spec(VOTERS, mixing={"minBatch": 1, "maxWait": "1s"}))
    tokens = system.invitations("gone")
    for voter in VOTERS[:2]:
        assert system.vote("gone", voter, tokens[voter], "sushi").status_code == 202
    # A sink holds the newest minBatch envelopes back while the poll is open: close it first.
    system.close("gone")
    deadline = time.monotonic() + 60
    while (found := system.results("gone"))["pending"] or found["votes"]["total"] < 2:
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    ballots = system.stored("gone")[1]
    uid = system.poll_uid("gone")
    answer = system.http.delete("/api/v1/polls/gone", headers=system.admin)
    assert answer.status_code == 200, answer.text
    erased = answer.json()
    assert erased["erased"]["votes"] == 2
    assert erased["erased"]["ballots"] == len(ballots)
    assert erased["erased"]["invitations"] == 3
    assert "deleted" in erased["message"]
    with system.db() as conn:
        assert storage.row_counts(conn, uuid.UUID(uid)) == (0, 0)
    assert system.http.get("/api/v1/polls/gone").status_code == 404
    late = system.vote("gone", VOTERS[2], tokens[VOTERS[2]], "pizza")
    assert late.status_code in (404, 410), late.text
    assert system.http.get("/api/v1/polls/gone/results").status_code == 404
    # The name is free again.
    system.create_poll("gone", poll_spec(VOTERS))
