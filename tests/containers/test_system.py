"""The whole system in containers, voting end to end: NATS and PostgreSQL, the chart's ingest,
the two sinks the operator renders for a poll and the re-mixer, all from images built here.

Without a Kubernetes API the ingest provisions polls itself (PRIVPOLL_CONTROL_PLANE=local, the
one change to the chart's environment); the sinks get the Deployment the operator would create
(deployments.sink, fed the operator's environment as the chart renders it); the re-mixer, which
the operator runs inside itself on Kubernetes, runs as `privpoll remixer` in a sink's spec.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from privpoll.db import storage
from tests.containers.conftest import RELEASE, STOP_WITHIN, Backend, Chart, answers, local_ingest
from tests.containers.podman import Container, wait_for
from tests.integration.conftest import CHOICES, Witness, poll_spec

VOTERS = 40


@pytest.fixture
def containers() -> Iterator[dict[str, Container]]:
    started: dict[str, Container] = {}
    yield started
    for container in started.values():
        container.remove()


def stored(backend: Backend, poll: str) -> tuple[int, int, int]:
    """(actor rows, distinct voters, ballot rows) of a poll."""
    with storage.connect(backend.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM actors a WHERE a.poll = p.uid),"
            " (SELECT count(DISTINCT voter) FROM actors a WHERE a.poll = p.uid),"
            " (SELECT count(*) FROM ballots b WHERE b.poll = p.uid)"
            " FROM polls p WHERE p.name = %s",
            (poll,),
        ).fetchone()
    assert row is not None, f"no poll {poll} in the database"
    return int(row[0]), int(row[1]), int(row[2])


def remixed(backend: Backend, poll: str) -> bool:
    with storage.connect(backend.database_url) as conn:
        row = conn.execute("SELECT remixed FROM polls WHERE name = %s", (poll,)).fetchone()
    return bool(row and row[0])


def stop_in_time(container: Container) -> str:
    """'' if the container stopped on SIGTERM within the bound with exit 0, else why not."""
    took, code = container.stop(grace=int(STOP_WITHIN * 3))
    if code == 0 and took < STOP_WITHIN:
        return ""
    return f"{container.name}: exit {code} after {took:.1f} s\n{container.logs()[-2000:]}"


def test_voting_end_to_end_in_containers(
    chart: Chart, backend: Backend, containers: dict[str, Container]
) -> None:
    admin = {"Authorization": f"Bearer {chart.secrets[(f'{RELEASE}-privpoll', 'admin-token')]}"}
    ingest = containers["ingest"] = backend.run("e2e-ingest", local_ingest(chart))
    wait_for(lambda: answers(f"{backend.ingest_url}/readyz"), "/readyz", logs=ingest)
    http = httpx.Client(base_url=backend.ingest_url, timeout=30)

    name = f"containers-{secrets.token_hex(3)}"
    voters = [f"voter{i}" for i in range(VOTERS)]
    created = http.post(
        "/api/v1/polls", json={"name": name, "spec": poll_spec(voters)}, headers=admin
    )
    assert created.status_code == 201, created.text
    witness = Witness(backend.nats_url, name)
    for role in ("actors", "ballots"):
        containers[role] = backend.run(f"e2e-sink-{role}", chart.sink(name, role))
    containers["remixer"] = backend.run("e2e-remixer", chart.sink(name, "ballots"), ["remixer"])

    invitations = http.get(f"/api/v1/polls/{name}/invitations", headers=admin)
    assert invitations.status_code == 200, invitations.text
    tokens = {item["voter"]: item["token"] for item in invitations.json()}
    truth: Counter[str] = Counter()

    def vote(voter: str, index: int) -> None:
        choice = CHOICES[index % len(CHOICES)]
        answer = http.post(
            f"/api/v1/polls/{name}/votes",
            json={"voter": voter, "token": tokens[voter], "choice": choice},
        )
        assert answer.status_code == 202, answer.text
        truth[choice] += 1

    half = VOTERS // 2
    for index, voter in enumerate(voters[:half]):
        vote(voter, index)
    # Stop both sinks once the ballot sink has stored some ballots: each still holds envelopes
    # it has not stored (a batch waits for mixing.minBatch envelopes or maxWait), and must
    # commit and ack them, or leave them to be delivered again. The rest of the votes arrive
    # while the sinks are down.
    wait_for(
        lambda: stored(backend, name)[2] > 0, "the first ballots stored", logs=containers["ballots"]
    )
    at_stop = stored(backend, name)
    late = [why for role in ("ballots", "actors") if (why := stop_in_time(containers[role]))]
    assert not late, f"sinks stopped with work in hand (stored {at_stop}):\n" + "\n".join(late)
    for index, voter in enumerate(voters[half:], start=half):
        vote(voter, index)
    for role in ("actors", "ballots"):
        containers[role].start()

    closed = http.post(f"/api/v1/polls/{name}/close", headers=admin)
    assert closed.status_code == 200, closed.text
    envelopes = witness.envelopes()
    assert len(envelopes) == VOTERS
    ballots = sum(len(e.ballots) for e in envelopes)

    def complete() -> bool:
        return stored(backend, name) == (VOTERS, VOTERS, ballots)

    wait_for(complete, f"{VOTERS} votes and {ballots} ballots stored", timeout=120)
    results: dict[str, Any] = {}

    def counted() -> bool:
        nonlocal results
        results = http.get(f"/api/v1/polls/{name}/results", headers=admin).json()
        return bool(results.get("votes", {}).get("storedBallots") == ballots)

    wait_for(counted, "the results counting every stored ballot")
    assert results["phase"] == "Closed", results
    assert results["votes"]["total"] == VOTERS, results
    assert results["votes"]["uniqueVoters"] == VOTERS, results
    assert {c["choice"] for c in results["choices"]} == set(CHOICES), results
    assert sum(c["stored"] for c in results["choices"]) == ballots, results
    for item in results["choices"]:
        # Randomized response is off: every real ballot carries its voter's choice.
        assert item["stored"] >= truth[item["choice"]], (item, truth)
        low, high = item["ci95"]
        assert low <= item["estimate"] <= high, item
    wait_for(
        lambda: remixed(backend, name),
        "the re-mixer rewriting the poll",
        logs=containers["remixer"],
    )
    # The re-mixer rewrites rows, never adds or drops one.
    assert stored(backend, name) == (VOTERS, VOTERS, ballots)

    late_ones = [why for c in containers.values() if c.running() and (why := stop_in_time(c))]
    assert not late_ones, "\n".join(late_ones)
