"""Idle sinks cost nothing: the operator scales a poll's sink Deployments to zero when their
consumers have had nothing new for a while, and back to one when a vote waits.

No kubelet here: the test plays it, starting each sink as its Deployment says while the
Deployment wants one replica and stopping it with SIGTERM when it wants none.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml

from privpoll.bus import naming
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from tests.e2e.controlplane import ROOT, ControlPlane, control_plane
from tests.e2e.test_operator import (
    Processes,
    _ok,
    admin_operator,
    ingest_command,
    operator_env,
    procs,
    start_operator_as,
    start_sink_as_deployed,
    wait_for,
)
from tests.integration.conftest import nats, postgres

__all__ = ["control_plane", "nats", "postgres", "procs"]

ADMIN = "idle-test-admin"
IDLE_SECONDS = "4"
VOTERS = [f"member-{i}" for i in range(10)]


def _namespace(plane: ControlPlane, postgres: PostgresServer) -> str:
    namespace = f"idle-{secrets.token_hex(3)}"
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl(
        "create", "secret", "generic", "privpoll-db", "-n", namespace,
        f"--from-literal=url={postgres.dsn}",
    )  # fmt: skip
    return namespace


def _poll(name: str, voters: list[str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "privpoll.dev/v1alpha1",
            "kind": "Poll",
            "metadata": {"name": name},
            "spec": {
                "title": "Which budget line?",
                "choices": ["parks", "roads", "schools"],
                "voters": {"ids": voters},
                "noise": {"fakeVotes": {"distribution": "poisson", "mean": 1, "min": 1}},
                "mixing": {"minBatch": 3, "maxWait": "1s"},
                "duplicates": "prevent",
            },
        }
    )


def _replicas(plane: ControlPlane, namespace: str, poll: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-{poll}-{role}", "-n", namespace)
        found[role] = int(deployment["spec"]["replicas"])
    return found


def _start_sinks(procs: Processes, plane: ControlPlane, namespace: str, poll: str) -> None:
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-{poll}-{role}", "-n", namespace)
        start_sink_as_deployed(procs, plane, deployment, namespace=namespace)


def _stop_sinks(procs: Processes, poll: str) -> None:
    """As the kubelet stops a pod: SIGTERM, then wait."""
    for role in naming.ROLES:
        process = procs.running.pop(f"privpoll-{poll}-{role}")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _actor_rows(postgres: PostgresServer, poll: str) -> list[str]:
    with storage.connect(postgres.dsn) as conn:
        found = storage.get_poll(conn, poll)
        assert found is not None
        rows = conn.execute("SELECT voter FROM actors WHERE poll = %s", (found.uid,)).fetchall()
    return sorted(str(row[0]) for row in rows)


def test_idle_sinks_go_to_zero_and_held_back_votes_survive(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    namespace = _namespace(plane, postgres)
    ns = ("-n", namespace)
    env = {**operator_env(plane, nats, postgres), "PRIVPOLL_SINK_IDLE_SECONDS": IDLE_SECONDS}
    start_operator_as(procs, admin_operator(env))
    poll = f"budget-{secrets.token_hex(3)}"
    plane.kubectl("apply", *ns, "-f", "-", stdin=_poll(poll, VOTERS))
    wait_for(lambda: plane.get("poll", poll, *ns).get("status", {}).get("pollUid"), "the Poll")
    _start_sinks(procs, plane, namespace, poll)

    port = free_port()
    argv, settings = ingest_command(port)
    procs.start(
        "ingest",
        argv,
        {
            **env,
            **settings,
            "PRIVPOLL_ADMIN_TOKEN": ADMIN,
            "PRIVPOLL_SECRET": "idle-test-secret",
        },
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    invitations = http.get(f"/api/v1/polls/{poll}/invitations", headers=admin).json()
    tokens = {item["voter"]: item["token"] for item in invitations}

    def vote(voters: list[str]) -> None:
        for voter in voters:
            answer = http.post(
                f"/api/v1/polls/{poll}/votes",
                json={"voter": voter, "token": tokens[voter], "choice": "parks"},
            )
            assert answer.status_code == 202, answer.text

    # Two votes, fewer than minBatch: the sinks hold both back, unacknowledged.
    vote(VOTERS[:2])
    zero = {role: 0 for role in naming.ROLES}
    wait_for(lambda: _replicas(plane, namespace, poll) == zero, "the sinks scaled to zero", 90)
    _stop_sinks(procs, poll)
    assert _actor_rows(postgres, poll) == [], "held-back votes are never written alone"

    # A new vote brings both sinks back within 30 s (timed from the 202, with the API
    # server's and the test's own polling on top).
    vote(VOTERS[2:3])
    asked = datetime.now(UTC)
    one = {role: 1 for role in naming.ROLES}
    wait_for(lambda: _replicas(plane, namespace, poll) == one, "the sinks back at one", 30)
    assert (datetime.now(UTC) - asked).total_seconds() < 30
    _start_sinks(procs, plane, namespace, poll)
    vote(VOTERS[3:6])

    # Close: every vote is stored exactly once, the held-back ones included (they came
    # back by redelivery after the ack wait).
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    plane.kubectl(
        "patch", "poll", poll, *ns, "--type", "merge",
        "-p", json.dumps({"spec": {"schedule": {"closesAt": now}}}),
    )  # fmt: skip

    def results() -> dict[str, Any] | None:
        found: dict[str, Any] = plane.get("poll", poll, *ns)
        return found if found["status"].get("results") else None

    closed = wait_for(results, "results in the Poll's status", timeout=180)
    assert closed["status"]["turnout"]["votes"] == 6
    assert _actor_rows(postgres, poll) == sorted(VOTERS[:6]), "nothing lost, nothing doubled"
    assert "Traceback" not in procs.log("operator")


def test_a_hundred_idle_open_polls_run_no_sink(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    namespace = _namespace(plane, postgres)
    env = {**operator_env(plane, nats, postgres), "PRIVPOLL_SINK_IDLE_SECONDS": IDLE_SECONDS}
    start_operator_as(procs, admin_operator(env))
    prefix = f"quiet-{secrets.token_hex(2)}"
    names = [f"{prefix}-{i:03d}" for i in range(100)]
    plane.kubectl(
        "apply", "-n", namespace, "-f", "-",
        stdin="---\n".join(_poll(name, ["someone"]) for name in names),
    )  # fmt: skip

    def running() -> int:
        items = plane.get("deployments", "-n", namespace)["items"]
        sinks = [d for d in items if d["metadata"]["name"].startswith(f"privpoll-{prefix}-")]
        assert len(sinks) <= 2 * len(names)
        if len(sinks) < 2 * len(names):
            return -1
        return sum(int(d["spec"]["replicas"]) for d in sinks)

    wait_for(lambda: running() == 0, "no sink replica for 100 idle open polls", timeout=600)
    for name in names[:3]:
        assert plane.get("poll", name, "-n", namespace)["status"]["phase"] == "Open"
