"""The operator against a real kube-apiserver, real NATS and real PostgreSQL.

kubectl applies a Poll; the operator provisions it and deploys its sinks; the test starts the
sinks exactly as their Deployments say (no kubelet here), votes through the ingest, closes the
poll with kubectl patch, reads the results from the Poll's status, and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.errors import BucketNotFoundError, NotFoundError

from privpoll import messaging, storage
from privpoll.embedded import NatsServer, PostgresServer, free_port
from tests.e2e.controlplane import ROOT, ControlPlane, control_plane
from tests.integration.conftest import nats, postgres

__all__ = ["control_plane", "nats", "postgres"]

ADMIN = "operator-test-admin"
IMAGE = "registry.example/privpoll:test"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def operator_env(plane: ControlPlane, nats: NatsServer, postgres: PostgresServer) -> dict[str, str]:
    return plane.env(
        PRIVPOLL_NATS_URL=nats.url,
        PRIVPOLL_DATABASE_URL=postgres.dsn,
        PRIVPOLL_SINK_IMAGE=IMAGE,
        PRIVPOLL_DATABASE_SECRET="privpoll-db:url",
    )


def start_operator(procs: Processes, env: dict[str, str]) -> int:
    port = free_port()
    argv = [
        sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
        "--liveness", f"http://127.0.0.1:{port}/healthz",
        "-m", "privpoll_operator.handlers",
    ]  # fmt: skip
    procs.start("operator", argv, env)
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), "the operator's liveness")
    return port


def _ok(url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).status_code == 200)
    except httpx.HTTPError:
        return False


def condition(poll: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in poll.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            found: dict[str, Any] = item
            return found
    return None


def queue_objects(nats_url: str, name: str) -> tuple[bool, list[str], bool]:
    async def look() -> tuple[bool, list[str], bool]:
        nc = await messaging.connect(nats_url, "test")
        try:
            js = nc.jetstream()
            try:
                await js.stream_info(messaging.stream(name))
            except NotFoundError:
                return False, [], False
            consumers = sorted(c.name for c in await js.consumers_info(messaging.stream(name)))
            try:
                await js.key_value(messaging.voters_bucket(name))
                bucket = True
            except BucketNotFoundError:
                bucket = False
            return True, consumers, bucket
        finally:
            await nc.close()

    return asyncio.run(look())


def start_sink_as_deployed(
    procs: Processes, plane: ControlPlane, deployment: dict[str, Any]
) -> None:
    """Run the container the Deployment describes: its command, args and env, nothing else."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = plane.get("secret", ref["name"])
            import base64

            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    command = shutil.which(container["command"][0], path=str(Path(sys.executable).parent))
    assert command is not None, "the image's entry point is the privpoll command"
    procs.start(deployment["metadata"]["name"], [command, *container["args"]], env)


def test_poll_lifecycle_through_kubectl(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    plane.kubectl(
        "create", "secret", "generic", "privpoll-db", f"--from-literal=url={postgres.dsn}"
    )
    env = operator_env(plane, nats, postgres)
    start_operator(procs, env)

    plane.kubectl("apply", "-f", str(ROOT / "examples" / "poll.yaml"))

    def ready() -> dict[str, Any] | None:
        poll: dict[str, Any] = plane.get("poll", "lunch")
        found = condition(poll, "Ready")
        return poll if found and found["status"] == "True" else None

    poll = wait_for(ready, "the Poll to turn Ready")
    assert poll["status"]["phase"] == "Open"
    assert condition(poll, "Provisioned")["status"] == "True"  # type: ignore[index]
    assert poll["status"]["observedGeneration"] == poll["metadata"]["generation"]
    assert queue_objects(nats.url, "lunch") == (True, ["actors", "ballots"], True)

    sinks = {}
    for role in messaging.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert container["command"] == ["privpoll"]
        assert container["args"] == ["sink", role, "--poll", "lunch"]
        owner = deployment["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("Poll", "lunch")
        sinks[role] = deployment

    # kill -9 the operator and start it again: resuming changes nothing.
    uid = poll["status"]["pollUid"]
    procs.kill("operator")
    start_operator(procs, env)
    time.sleep(3)
    again = plane.get("poll", "lunch")
    assert again["status"]["pollUid"] == uid
    for role in messaging.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}")
        assert (
            deployment["metadata"]["resourceVersion"] == sinks[role]["metadata"]["resourceVersion"]
        )

    for deployment in sinks.values():
        start_sink_as_deployed(procs, plane, deployment)

    port = free_port()
    ingest_env = {
        **os.environ,
        "PRIVPOLL_NATS_URL": nats.url,
        "PRIVPOLL_DATABASE_URL": postgres.dsn,
        "PRIVPOLL_ADMIN_TOKEN": ADMIN,
        "PRIVPOLL_SECRET": "operator-test-secret",
    }
    procs.start(
        "ingest",
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", "1",
         "-b", f"127.0.0.1:{port}", "privpoll.ingest:create_app()"],
        ingest_env,
    )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")
    invitations = http.get(
        "/api/v1/polls/lunch/invitations", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    tokens = {item["voter"]: item["token"] for item in invitations}
    for voter, choice in (("alice", "pizza"), ("bob", "sushi")):
        answer = http.post(
            "/api/v1/polls/lunch/votes",
            json={"voter": voter, "token": tokens[voter], "choice": choice},
        )
        assert answer.status_code == 202, answer.text

    # After the first vote the choices may not change; the title may.
    plane.kubectl(
        "patch", "poll", "lunch", "--type", "merge",
        "-p", json.dumps({"spec": {"choices": ["pizza", "sushi"], "title": "Friday lunch"}}),
    )  # fmt: skip

    def refused() -> dict[str, Any] | None:
        found = condition(plane.get("poll", "lunch"), "Ready")
        return found if found and found["reason"] == "UnsafeChange" else None

    assert "choices cannot change after the first vote" in wait_for(refused, "a refusal")["message"]
    plane.kubectl(
        "patch", "poll", "lunch", "--type", "merge",
        "-p", json.dumps({"spec": {"choices": ["pizza", "sushi", "tacos"]}}),
    )  # fmt: skip
    wait_for(ready, "the Poll to be Ready again")
    assert http.get("/api/v1/polls/lunch").json()["spec"]["title"] == "Friday lunch"

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    plane.kubectl(
        "patch", "poll", "lunch", "--type", "merge",
        "-p", json.dumps({"spec": {"schedule": {"closesAt": now}}}),
    )  # fmt: skip

    def closed_with_results() -> dict[str, Any] | None:
        poll: dict[str, Any] = plane.get("poll", "lunch")
        return poll if poll["status"].get("results") else None

    poll = wait_for(closed_with_results, "results in the Poll's status", timeout=90)
    assert poll["status"]["phase"] == "Closed"
    assert poll["status"]["turnout"] == {"eligible": 3, "voters": 2, "votes": 2}
    results = poll["status"]["results"]
    assert results["votes"]["total"] == 2
    assert results["votes"]["uniqueVoters"] == 2
    assert [c["choice"] for c in results["choices"]] == ["pizza", "sushi", "tacos"]
    status_text = json.dumps(poll["status"])
    assert "alice" not in status_text
    assert "bob" not in status_text
    late = http.post(
        "/api/v1/polls/lunch/votes",
        json={"voter": "carol", "token": tokens["carol"], "choice": "tacos"},
    )
    assert late.status_code == 410
    for role in messaging.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}")
        assert deployment["spec"]["replicas"] == 0, "sinks are scaled to zero after the drain"

    listed = plane.kubectl("get", "pp").stdout
    assert "lunch" in listed
    assert "Closed" in listed

    plane.kubectl("delete", "poll", "lunch", "--timeout=60s")
    for role in messaging.ROLES:
        gone = plane.kubectl("get", "deployment", f"privpoll-lunch-{role}", check=False)
        assert gone.returncode != 0
    assert queue_objects(nats.url, "lunch") == (False, [], False)
    assert "Traceback" not in procs.log("operator")


def test_voters_from_a_configmap_and_retention_delete(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    start_operator(procs, operator_env(plane, nats, postgres))
    plane.kubectl("apply", "-f", str(ROOT / "examples" / "poll-long-list.yaml"))

    def ready() -> dict[str, Any] | None:
        found = condition(plane.get("poll", "offsite"), "Ready")
        return found if found and found["status"] == "True" else None

    wait_for(ready, "the offsite Poll to turn Ready")
    with storage.connect(postgres.dsn) as conn:
        assert storage.voter_ids(conn, "offsite") == ["ada", "grace", "edsger", "barbara", "donald"]
    plane.kubectl("delete", "poll", "offsite", "--timeout=60s")
    with storage.connect(postgres.dsn) as conn:
        assert storage.get_poll(conn, "offsite") is None, "retention: delete removes the rows"


def test_invalid_polls_are_refused_with_a_reason(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")

    def poll(name: str, spec: dict[str, Any]) -> str:
        manifest = {
            "apiVersion": "privpoll.dev/v1alpha1",
            "kind": "Poll",
            "metadata": {"name": name},
            "spec": {"title": "t", "voters": {"ids": ["alice"]}, **spec},
        }
        return json.dumps(manifest)

    one_choice = plane.kubectl(
        "apply", "-f", "-", stdin=poll("one", {"choices": ["a"]}), check=False
    )
    assert one_choice.returncode != 0
    assert "spec.choices" in one_choice.stderr
    assert "should have at least 2 items" in one_choice.stderr

    twice = plane.kubectl(
        "apply", "-f", "-", stdin=poll("twice", {"choices": ["a", "a"]}), check=False
    )
    assert twice.returncode != 0
    assert "Duplicate value" in twice.stderr

    backwards = plane.kubectl(
        "apply", "-f", "-",
        stdin=poll("backwards", {
            "choices": ["a", "b"],
            "schedule": {"opensAt": "2099-01-02T00:00:00Z", "closesAt": "2099-01-01T00:00:00Z"},
        }),
        check=False,
    )  # fmt: skip
    assert backwards.returncode != 0
    assert "closesAt must be after opensAt" in backwards.stderr

    # Valid for the schema, refused by the model: the operator says why in a condition.
    start_operator(procs, operator_env(plane, nats, postgres))
    plane.kubectl(
        "apply", "-f", "-",
        stdin=poll("nonoise", {
            "choices": ["a", "b"],
            "noise": {"fakeVotes": {"distribution": "fixed", "count": 0, "min": 0}},
        }),
    )  # fmt: skip

    def failed() -> dict[str, Any] | None:
        found = condition(plane.get("poll", "nonoise"), "Ready")
        return found if found and found["reason"] == "InvalidSpec" else None

    reason = wait_for(failed, "a condition saying why the poll is invalid")
    assert "at least one fake vote per real vote" in reason["message"]
    assert plane.get("poll", "nonoise")["status"]["phase"] == "Failed"
    plane.kubectl("delete", "poll", "nonoise", "--timeout=60s")
