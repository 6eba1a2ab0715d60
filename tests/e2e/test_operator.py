"""The operator against a real kube-apiserver, real NATS and real PostgreSQL.

kubectl applies a Poll; the operator provisions it and deploys its sinks; the test starts the
sinks exactly as their Deployments say (no kubelet here), votes through the ingest, closes the
poll with kubectl patch, reads the results from the Poll's status, and deletes it.

That story runs twice: with admin credentials, and as the Helm chart installs it: the operator
and the ingest started as their Deployments say, the operator authenticated by a token of its
ServiceAccount (TokenRequest API) and held to the chart's Role.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from nats.js.errors import BucketNotFoundError, NotFoundError
from psycopg.conninfo import make_conninfo

from privpoll.bus import naming
from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer, free_port
from privpoll.local.runner import gunicorn_argv
from tests.e2e.controlplane import ROOT, ControlPlane, control_plane
from tests.e2e.helm import CHART, Helm, helm, secret_data, service_account_kubeconfig
from tests.integration.conftest import nats, postgres

__all__ = ["control_plane", "helm", "nats", "postgres"]

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


# A command line and its environment, given the loopback port the process is to listen on.
Command = Callable[[int], tuple[list[str], dict[str, str]]]


def admin_operator(env: dict[str, str]) -> Command:
    """The operator as the admin runs it: every namespace, the environment's kubeconfig."""

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
            "--liveness", f"http://127.0.0.1:{port}/healthz",
            "-m", "privpoll_operator.handlers",
        ]  # fmt: skip
        return argv, env

    return command


def start_operator(procs: Processes, env: dict[str, str]) -> int:
    return start_operator_as(procs, admin_operator(env))


def start_operator_as(procs: Processes, command: Command) -> int:
    port = free_port()
    argv, env = command(port)
    procs.start("operator", argv, env)
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), "the operator's liveness")
    return port


def ingest_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The ingest as `privpoll up` starts it, one worker on ``port``: its command line and
    the settings it takes from the environment."""
    return gunicorn_argv(), {
        "PRIVPOLL_HTTP_ADDR": f"127.0.0.1:{port}",
        "PRIVPOLL_INGEST_WORKERS": "1",
    }


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
        nc = await naming.connect(nats_url, "test")
        try:
            js = nc.jetstream()
            try:
                await js.stream_info(naming.stream(name))
            except NotFoundError:
                return False, [], False
            consumers = sorted(c.name for c in await js.consumers_info(naming.stream(name)))
            try:
                await js.key_value(naming.voters_bucket(name))
                bucket = True
            except BucketNotFoundError:
                bucket = False
            return True, consumers, bucket
        finally:
            await nc.close()

    return asyncio.run(look())


def as_deployed(
    plane: ControlPlane, namespace: str, container: dict[str, Any]
) -> tuple[list[str], dict[str, str]]:
    """The container's command, args and env (Secrets and the pod's namespace resolved), run
    from this virtualenv, which holds what the image holds."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = plane.get("secret", ref["name"], "-n", namespace)
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", item
            env[item["name"]] = namespace
    command = shutil.which(container["command"][0], path=str(Path(sys.executable).parent))
    assert command is not None, f"the image's entry point {container['command'][0]} exists"
    return [command, *container["command"][1:], *container.get("args", [])], env


def listening_on(argv: list[str], flag: str, address: str) -> list[str]:
    """The same command line, listening on a loopback address: the test's processes share one
    network, where each pod has its own."""
    prefix = f"{flag}="
    assert sum(a.startswith(prefix) for a in argv) == 1, f"one {flag} in {argv}"
    return [prefix + address if a.startswith(prefix) else a for a in argv]


def start_sink_as_deployed(
    procs: Processes,
    plane: ControlPlane,
    deployment: dict[str, Any],
    image: str = IMAGE,
    namespace: str = "default",
) -> None:
    """Run the container the Deployment describes: its command, args and env, nothing else."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image
    argv, env = as_deployed(plane, namespace, container)
    procs.start(deployment["metadata"]["name"], argv, env)


@dataclass
class Setup:
    """Where the story's Poll lives and how its operator and ingest run."""

    namespace: str
    image: str  # the sink image the operator was told
    operator: Command
    ingest: Command
    admin_token: str


def admin_setup(plane: ControlPlane, nats: NatsServer, postgres: PostgresServer) -> Setup:
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    plane.kubectl(
        "create", "secret", "generic", "privpoll-db", f"--from-literal=url={postgres.dsn}"
    )

    def ingest(port: int) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            "PRIVPOLL_NATS_URL": nats.url,
            "PRIVPOLL_DATABASE_URL": postgres.dsn,
            "PRIVPOLL_ADMIN_TOKEN": ADMIN,
            "PRIVPOLL_SECRET": "operator-test-secret",
        }
        argv, settings = ingest_command(port)
        return argv, {**env, **settings}

    operator = admin_operator(operator_env(plane, nats, postgres))
    return Setup("default", IMAGE, operator, ingest, ADMIN)


def fresh_database(postgres: PostgresServer) -> str:
    """A database of its own on the shared server, so that other tests' polls stay apart."""
    name = f"chart_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # a name made here, not input
    return make_conninfo(postgres.dsn, dbname=name)


def chart_setup(
    plane: ControlPlane, helm: Helm, nats: NatsServer, postgres: PostgresServer, root: Path
) -> Setup:
    """`helm install` of the chart in its external-servers mode, pointed at the test's NATS and
    a fresh database; the operator and the ingest run as their Deployments say, each with a
    token of its own ServiceAccount."""
    release = f"story-{secrets.token_hex(3)}"
    namespace = release
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl(
        "create", "secret", "generic", "story-dsn", "-n", namespace,
        f"--from-literal=url={fresh_database(postgres)}",
    )  # fmt: skip
    helm.on(plane).run(
        "install", release, str(CHART), "-n", namespace,
        "--set", "image.tag=story",
        "--set", "nats.enabled=false",
        "--set", f"nats.external.url={nats.url}",
        "--set", "cockroachdb.enabled=false",
        "--set", "database.external.existingSecret=story-dsn",
    )  # fmt: skip
    fullname = f"{release}-privpoll"

    def pod(component: str) -> dict[str, Any]:
        deployment = plane.get("deployment", f"{fullname}-{component}", "-n", namespace)
        found: dict[str, Any] = deployment["spec"]["template"]["spec"]
        return found

    def its_account(component: str) -> dict[str, str]:
        account = pod(component)["serviceAccountName"]
        path = service_account_kubeconfig(plane, namespace, account, root / f"{account}.json")
        return {"KUBECONFIG": str(path)}

    def operator(port: int) -> tuple[list[str], dict[str, str]]:
        argv, env = as_deployed(plane, namespace, pod("operator")["containers"][0])
        liveness = f"http://127.0.0.1:{port}/healthz"
        return listening_on(argv, "--liveness", liveness), {**env, **its_account("operator")}

    def ingest(port: int) -> tuple[list[str], dict[str, str]]:
        argv, env = as_deployed(plane, namespace, pod("ingest")["containers"][0])
        # The address is a setting (privpoll.web.gunicorn_conf); each pod has a network of
        # its own, the test's processes share one.
        assert env["PRIVPOLL_HTTP_ADDR"] == "0.0.0.0:8000"
        env["PRIVPOLL_HTTP_ADDR"] = f"127.0.0.1:{port}"
        return argv, {**env, **its_account("ingest")}

    # The admin token, where NOTES.txt says to find it.
    token = secret_data(plane, namespace, fullname)["admin-token"]
    return Setup(namespace, "privpoll:story", operator, ingest, token)


@pytest.fixture(params=["admin", "chart"])
def setup(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    tmp_path: Path,
) -> Setup:
    if request.param == "admin":
        return admin_setup(control_plane, nats, postgres)
    chart_helm: Helm = request.getfixturevalue("helm")
    return chart_setup(control_plane, chart_helm, nats, postgres, tmp_path)


def test_poll_lifecycle_through_kubectl(
    control_plane: ControlPlane,
    nats: NatsServer,
    setup: Setup,
    procs: Processes,
) -> None:
    plane = control_plane
    ns = ("-n", setup.namespace)
    start_operator_as(procs, setup.operator)

    plane.kubectl("apply", *ns, "-f", str(ROOT / "examples" / "poll.yaml"))

    def ready() -> dict[str, Any] | None:
        poll: dict[str, Any] = plane.get("poll", "lunch", *ns)
        found = condition(poll, "Ready")
        return poll if found and found["status"] == "True" else None

    poll = wait_for(ready, "the Poll to turn Ready")
    assert poll["status"]["phase"] == "Open"
    assert condition(poll, "Provisioned")["status"] == "True"  # type: ignore[index]
    assert poll["status"]["observedGeneration"] == poll["metadata"]["generation"]
    assert queue_objects(nats.url, "lunch") == (True, ["actors", "ballots"], True)

    sinks = {}
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}", *ns)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == setup.image
        assert container["command"] == ["privpoll"]
        assert container["args"] == ["sink", role, "--poll", "lunch"]
        owner = deployment["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("Poll", "lunch")
        sinks[role] = deployment

    # kill -9 the operator and start it again: resuming changes nothing.
    uid = poll["status"]["pollUid"]
    procs.kill("operator")
    start_operator_as(procs, setup.operator)
    time.sleep(3)
    again = plane.get("poll", "lunch", *ns)
    assert again["status"]["pollUid"] == uid
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}", *ns)
        assert (
            deployment["metadata"]["resourceVersion"] == sinks[role]["metadata"]["resourceVersion"]
        )

    for deployment in sinks.values():
        start_sink_as_deployed(procs, plane, deployment, setup.image, setup.namespace)

    port = free_port()
    procs.start("ingest", *setup.ingest(port))
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")
    admin = {"Authorization": f"Bearer {setup.admin_token}"}
    invitations = http.get("/api/v1/polls/lunch/invitations", headers=admin).json()
    tokens = {item["voter"]: item["token"] for item in invitations}
    for voter, choice in (("alice", "pizza"), ("bob", "sushi")):
        answer = http.post(
            "/api/v1/polls/lunch/votes",
            json={"voter": voter, "token": tokens[voter], "choice": choice},
        )
        assert answer.status_code == 202, answer.text

    # After the first vote the choices may not change; the title may.
    plane.kubectl(
        "patch", "poll", "lunch", *ns, "--type", "merge",
        "-p", json.dumps({"spec": {"choices": ["pizza", "sushi"], "title": "Friday lunch"}}),
    )  # fmt: skip

    def refused() -> dict[str, Any] | None:
        found = condition(plane.get("poll", "lunch", *ns), "Ready")
        return found if found and found["reason"] == "UnsafeChange" else None

    assert "choices cannot change after the first vote" in wait_for(refused, "a refusal")["message"]
    plane.kubectl(
        "patch", "poll", "lunch", *ns, "--type", "merge",
        "-p", json.dumps({"spec": {"choices": ["pizza", "sushi", "tacos"]}}),
    )  # fmt: skip
    wait_for(ready, "the Poll to be Ready again")
    assert http.get("/api/v1/polls/lunch").json()["spec"]["title"] == "Friday lunch"

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    plane.kubectl(
        "patch", "poll", "lunch", *ns, "--type", "merge",
        "-p", json.dumps({"spec": {"schedule": {"closesAt": now}}}),
    )  # fmt: skip

    def closed_with_results() -> dict[str, Any] | None:
        poll: dict[str, Any] = plane.get("poll", "lunch", *ns)
        return poll if poll["status"].get("results") else None

    poll = wait_for(closed_with_results, "results in the Poll's status", timeout=90)
    assert poll["status"]["phase"] == "Closed"
    assert poll["status"]["turnout"] == {"eligible": 3, "voters": 2, "votes": 2}
    results = poll["status"]["results"]
    assert results["votes"]["total"] == 2
    assert results["votes"]["uniqueVoters"] == 2
    assert [c["choice"] for c in results["choices"]] == ["pizza", "sushi", "tacos"]
    # Status, events and metrics never name a voter (let alone next to a choice).
    events = plane.get("events", *ns)["items"]
    # (kopf posts none here: it finds the events API by scanning, which the operator turns
    # off for least privilege. Should that change, this check covers them.)
    seen = {
        "status": json.dumps(poll["status"]),
        "events": json.dumps([(e.get("reason"), e.get("message")) for e in events]),
        "metrics": http.get("/metrics").text,
    }
    for where, text in seen.items():
        for voter, token in tokens.items():
            assert voter not in text, f"{where} names {voter}"
            assert token not in text, f"{where} holds a token"
    assert not any(choice in seen["metrics"] for choice in ("pizza", "sushi", "tacos"))
    assert poll["status"]["remix"]["remixed"] is True
    late = http.post(
        "/api/v1/polls/lunch/votes",
        json={"voter": "carol", "token": tokens["carol"], "choice": "tacos"},
    )
    assert late.status_code == 410
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-lunch-{role}", *ns)
        assert deployment["spec"]["replicas"] == 0, "sinks are scaled to zero after the drain"

    listed = plane.kubectl("get", "pp", *ns).stdout
    assert "lunch" in listed
    assert "Closed" in listed

    plane.kubectl("delete", "poll", "lunch", *ns, "--timeout=60s")
    for role in naming.ROLES:
        gone = plane.kubectl("get", "deployment", f"privpoll-lunch-{role}", *ns, check=False)
        assert gone.returncode != 0
    assert queue_objects(nats.url, "lunch") == (False, [], False)
    assert "Traceback" not in procs.log("operator")
    assert "Forbidden" not in procs.log("operator"), "its Role lets the operator do its work"


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


def test_the_api_creates_poll_resources_on_kubernetes(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    """On a cluster, POST /api/v1/polls makes a Poll, so the operator gives it its sinks."""
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    start_operator(procs, operator_env(plane, nats, postgres))
    port = free_port()
    env = plane.env(
        PRIVPOLL_NATS_URL=nats.url,
        PRIVPOLL_DATABASE_URL=postgres.dsn,
        PRIVPOLL_ADMIN_TOKEN=ADMIN,
        PRIVPOLL_SECRET="operator-test-secret",
        PRIVPOLL_CONTROL_PLANE="kubernetes",
        PRIVPOLL_NAMESPACE="default",
    )
    argv, settings = ingest_command(port)
    procs.start("ingest", argv, {**env, **settings})
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    body = {
        "name": "viaapi",
        "spec": {"title": "Made through the API", "choices": ["a", "b"], "voters": {"ids": ["x"]}},
    }
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = http.post("/api/v1/polls", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["phase"] == "Open"
    resource = plane.get("poll", "viaapi")
    assert resource["spec"]["title"] == "Made through the API"

    def deployed() -> bool:
        names = [f"deployment/privpoll-viaapi-{role}" for role in naming.ROLES]
        return plane.kubectl("get", *names, check=False).returncode == 0

    wait_for(deployed, "the sink Deployments of a poll made through the API")
    again = http.post("/api/v1/polls", json=body, headers=admin)
    assert again.status_code == 409
    plane.kubectl("delete", "poll", "viaapi", "--timeout=60s")


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

    # More the API server refuses: wrong types, unknown fields, bounds, a name that is SQL.
    schema_refusals: list[tuple[str, dict[str, Any], str]] = [
        ("typed", {"choices": "pizza"}, "spec.choices: Invalid value"),
        ("colour", {"choices": ["a", "b"], "colour": "red"}, 'unknown field "spec.colour"'),
        ("long", {"choices": ["a", "b" * 101]}, "spec.choices[1]: Too long"),
        ("batch", {"choices": ["a", "b"], "mixing": {"minBatch": 0}}, "spec.mixing.minBatch"),
        ("maybe", {"choices": ["a", "b"], "duplicates": "maybe"}, "spec.duplicates"),
        ("x'; drop table polls; --", {"choices": ["a", "b"]}, "metadata.name: Invalid value"),
    ]
    for name, spec, words in schema_refusals:
        refused = plane.kubectl("apply", "-f", "-", stdin=poll(name, spec), check=False)
        assert refused.returncode != 0, name
        assert words in refused.stderr, refused.stderr
    stored = {p["metadata"]["name"] for p in plane.get("polls")["items"]}
    assert not stored & {name for name, _, _ in schema_refusals}, "none of them was stored"

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
    plane.kubectl("apply", "-f", "-", stdin=poll("tabbed", {"choices": ["a", "b\tc"]}))

    def tabbed() -> dict[str, Any] | None:
        found = condition(plane.get("poll", "tabbed"), "Ready")
        return found if found and found["reason"] == "InvalidSpec" else None

    assert "control characters" in wait_for(tabbed, "the tabbed Poll refused")["message"]
    # Refused means nothing provisioned: no stream, no bucket, no row.
    for name in ("nonoise", "tabbed"):
        assert queue_objects(nats.url, name) == (False, [], False), name
        with storage.connect(postgres.dsn) as conn:
            assert storage.get_poll(conn, name) is None, name
        plane.kubectl("delete", "poll", name, "--timeout=60s")


class Kubelet:
    """Starts the sink Deployments the operator creates in a namespace, as a node would."""

    def __init__(self, procs: Processes, plane: ControlPlane, namespace: str, image: str) -> None:
        self.procs, self.plane, self.namespace, self.image = procs, plane, namespace, image
        self.started: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            found = self.plane.get(
                "deployments", "-n", self.namespace,
                "-l", "app.kubernetes.io/managed-by=privpoll-operator",
            )  # fmt: skip
            for deployment in found["items"]:
                name = deployment["metadata"]["name"]
                if name not in self.started and deployment["spec"]["replicas"] > 0:
                    self.started.add(name)
                    start_sink_as_deployed(
                        self.procs, self.plane, deployment, self.image, self.namespace
                    )

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_the_helm_test_pod_passes(
    control_plane: ControlPlane,
    helm: Helm,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
    tmp_path: Path,
) -> None:
    """What `helm test` runs, run here as its Pod says, with its ServiceAccount's token: it
    creates a Poll, votes through the API, closes the poll and reads the results."""
    plane = control_plane
    setup = chart_setup(plane, helm, nats, postgres, tmp_path)
    start_operator_as(procs, setup.operator)
    port = free_port()
    procs.start("ingest", *setup.ingest(port))
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")

    release = setup.namespace
    rendered = helm.on(plane).run("get", "hooks", release, "-n", setup.namespace).stdout
    [pod] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    argv, env = as_deployed(plane, setup.namespace, spec["containers"][0])
    # The Service's address, as this machine reaches the ingest.
    assert env["PRIVPOLL_URL"] == f"http://{release}-privpoll.{setup.namespace}.svc:80"
    env["PRIVPOLL_URL"] = f"http://127.0.0.1:{port}"
    account = spec["serviceAccountName"]
    env["KUBECONFIG"] = str(
        service_account_kubeconfig(plane, setup.namespace, account, tmp_path / "test.json")
    )
    with Kubelet(procs, plane, setup.namespace, setup.image):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "privpoll works" in done.stdout
    assert "2 votes accepted" in done.stdout
    assert plane.get("polls", "-n", setup.namespace)["items"] == [], "the test cleans up"


def test_the_charts_ingest_turns_api_polls_into_poll_resources(
    control_plane: ControlPlane,
    helm: Helm,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
    tmp_path: Path,
) -> None:
    """The chart's ingest, with its own ServiceAccount (it may only create Polls), makes a Poll
    in the release's namespace for POST /api/v1/polls; the chart's operator provisions it."""
    plane = control_plane
    setup = chart_setup(plane, helm, nats, postgres, tmp_path)
    start_operator_as(procs, setup.operator)
    port = free_port()
    procs.start("ingest", *setup.ingest(port))
    wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), "the ingest")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    title = "Made through the API"
    body = {
        "name": "viachart",
        "spec": {"title": title, "choices": ["a", "b"], "voters": {"ids": ["x"]}},
    }
    admin = {"Authorization": f"Bearer {setup.admin_token}"}
    created = http.post("/api/v1/polls", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert plane.get("poll", "viachart", "-n", setup.namespace)["spec"]["title"] == title
    for role in naming.ROLES:
        deployment = plane.get("deployment", f"privpoll-viachart-{role}", "-n", setup.namespace)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == setup.image
    plane.kubectl("delete", "poll", "viachart", "-n", setup.namespace, "--timeout=60s")
    assert "Forbidden" not in procs.log("ingest")
