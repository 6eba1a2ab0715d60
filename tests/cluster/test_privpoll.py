"""The user's story on the one-node cluster, as docs/deploy.md tells it: `helm install` with
an external PostgreSQL, every pod Ready through its own probes, a Poll applied with kubectl
gets its sinks as pods, votes go through the ingest Service, the results reach the Poll's
status and the API, `helm test` passes, a sink pod killed mid-voting loses and doubles no
vote, a `helm upgrade` rolls the ingest without refusing a vote, and `helm uninstall` leaves
what docs/deploy.md says it leaves.

The images are inputs, imported into the node from PRIVPOLL_IMAGE_ARCHIVES (`podman save -o
X.tar IMAGE`, one archive per image); their names:

    PRIVPOLL_IMAGE            default localhost/privpoll:dev          (make image)
    PRIVPOLL_NATS_IMAGE       default localhost/privpoll-nats:dev     nats-server as entrypoint
    PRIVPOLL_POSTGRES_IMAGE   default localhost/privpoll-postgres:dev POSTGRES_USER/PASSWORD/DB

Without them these tests skip, saying which image is missing. The privpoll image must be
built from the same commit as the chart: the chart names the image's modules (an image of
an older commit fails `helm install`, its ingest never Ready).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.conftest import up_to
from tests.cluster.test_node import eventually
from tests.e2e.controlplane import ROOT
from tests.e2e.helm import CHART, Helm, helm, secret_data
from tests.environment import need

__all__ = ["helm"]

NS = "privpoll"
RELEASE = "privpoll"
TEST_LABEL = "privpoll-test/part"
IMAGES = {
    "PRIVPOLL_IMAGE": "localhost/privpoll:dev",
    "PRIVPOLL_NATS_IMAGE": "localhost/privpoll-nats:dev",
    "PRIVPOLL_POSTGRES_IMAGE": "localhost/privpoll-postgres:dev",
}


def image(variable: str) -> str:
    return os.environ.get(variable) or IMAGES[variable]


def split(reference: str) -> tuple[str, str]:
    repository, _, tag = reference.rpartition(":")
    return repository, tag


@dataclass
class Release:
    node: Cluster
    helm: Helm
    password: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def ingest(self) -> str:
        service = self.node.get("service", RELEASE, "-n", NS)
        return f"http://{service['spec']['clusterIP']}"

    @property
    def admin(self) -> dict[str, str]:
        assert self.node.plane is not None
        token = secret_data(self.node.plane, NS, RELEASE)["admin-token"]
        return {"Authorization": f"Bearer {token}"}

    def values(self, *extra: str) -> list[str]:
        repository, tag = split(image("PRIVPOLL_IMAGE"))
        nats_repository, nats_tag = split(image("PRIVPOLL_NATS_IMAGE"))
        return [
            "--set", f"image.repository={repository}",
            "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",
            "--set", f"nats.image.repository={nats_repository}",
            "--set", f"nats.image.tag={nats_tag}",
            "--set", "nats.image.pullPolicy=Never",
            "--set", "nats.storage.size=1Gi",
            "--set", "cockroachdb.enabled=false",
            "--set", "database.external.existingSecret=privpoll-test-database",
            *extra,
        ]  # fmt: skip

    def install_database(self) -> None:
        """PostgreSQL in its own pod: the chart's "external" database."""
        pg = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "pg", "labels": {TEST_LABEL: "database"}},
                    "spec": {
                        "selector": {"matchLabels": {TEST_LABEL: "database"}},
                        "template": {
                            "metadata": {"labels": {TEST_LABEL: "database"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "postgres",
                                        "image": image("PRIVPOLL_POSTGRES_IMAGE"),
                                        "imagePullPolicy": "Never",
                                        "env": [
                                            {"name": "POSTGRES_USER", "value": "privpoll"},
                                            {"name": "POSTGRES_PASSWORD", "value": self.password},
                                            {"name": "POSTGRES_DB", "value": "privpoll"},
                                            {
                                                "name": "PGDATA",
                                                "value": "/var/lib/postgresql/data/pg",
                                            },
                                        ],
                                        "ports": [{"containerPort": 5432}],
                                        "readinessProbe": {
                                            "tcpSocket": {"port": 5432},
                                            "periodSeconds": 2,
                                        },
                                        "volumeMounts": [
                                            {
                                                "name": "data",
                                                "mountPath": "/var/lib/postgresql/data",
                                            }
                                        ],
                                    }
                                ],
                                "volumes": [{"name": "data", "emptyDir": {}}],
                            },
                        },
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "pg", "labels": {TEST_LABEL: "database"}},
                    "spec": {"selector": {TEST_LABEL: "database"}, "ports": [{"port": 5432}]},
                },
            ],
        }
        self.node.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps(pg))
        dsn = f"postgresql://privpoll:{self.password}@pg.{NS}.svc:5432/privpoll"
        self.node.kubectl(
            "create", "secret", "generic", "privpoll-test-database", "-n", NS,
            f"--from-literal=url={dsn}",
        )  # fmt: skip
        self.node.kubectl("label", "secret", "privpoll-test-database", "-n", NS, f"{TEST_LABEL}=db")
        self.node.kubectl("rollout", "status", "deployment/pg", "-n", NS, "--timeout=180s")

    def volume_for_nats(self) -> None:
        """No storage provisioner runs here: a hostPath PersistentVolume for NATS's claim."""
        folder = self.node.root / "volumes" / "nats-0"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "privpoll-test-nats-0", "labels": {TEST_LABEL: "volume"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(folder), "type": "Directory"},
            },
        }
        self.node.kubectl("apply", "-f", "-", stdin=json.dumps(volume))


def missing_images(node: Cluster) -> list[str]:
    present = set(node.ctr("images", "ls", "-q").stdout.split())
    return [f"{var}={image(var)}" for var in IMAGES if image(var) not in present]


@pytest.fixture(scope="module")
def release(cluster: Cluster, helm: Helm) -> Iterator[Release]:
    node = up_to(cluster, "services")
    missing = missing_images(node)
    need(
        not missing,
        f"image(s) {', '.join(missing)} in the node (make e2e-cluster builds them and passes "
        "`podman save -o X.tar IMAGE` archives in PRIVPOLL_IMAGE_ARCHIVES)",
    )
    assert node.plane is not None
    found = Release(node, helm.on(node.plane))
    node.kubectl("create", "namespace", NS)
    found.install_database()
    found.volume_for_nats()
    yield found
    node.kubectl("delete", "polls", "--all", "-n", NS, "--timeout=120s", check=False)
    found.helm.run("uninstall", RELEASE, "-n", NS, "--wait", check=False)


def install(release: Release) -> None:
    release.helm.run(
        "install", RELEASE, str(CHART), "-n", NS, *release.values(), "--wait", "--timeout", "4m"
    )


def test_helm_install_gets_every_pod_ready_through_its_probes(release: Release) -> None:
    install(release)
    pods = release.node.get("pods", "-n", NS, "-l", f"app.kubernetes.io/instance={RELEASE}")
    assert pods["items"]
    for pod in pods["items"]:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert conditions.get("Ready") == "True", (pod["metadata"]["name"], pod["status"])
        for container in pod["spec"]["containers"]:
            probes = [p for p in ("readinessProbe", "livenessProbe") if container.get(p)]
            assert probes, (pod["metadata"]["name"], container["name"])


def _invitations(release: Release, poll: str) -> dict[str, str]:
    answer = httpx.get(
        f"{release.ingest}/api/v1/polls/{poll}/invitations", headers=release.admin, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {item["voter"]: item["token"] for item in answer.json()}


def _vote(client: httpx.Client, release: Release, poll: str, voter: str, token: str) -> int:
    try:
        answer = client.post(
            f"{release.ingest}/api/v1/polls/{poll}/votes",
            json={"voter": voter, "token": token, "choice": "pizza"},
            timeout=30,
        )
    except httpx.HTTPError:
        return 0
    return answer.status_code


def _apply_poll(release: Release, name: str, voters: list[str]) -> None:
    poll = {
        "apiVersion": "privpoll.dev/v1alpha1",
        "kind": "Poll",
        "metadata": {"name": name},
        "spec": {
            "title": f"cluster test {name}",
            "choices": ["pizza", "sushi", "tacos"],
            "voters": {"ids": voters},
            "noise": {"fakeVotes": {"distribution": "fixed", "count": 1, "min": 1}},
            "mixing": {"minBatch": 1, "maxWait": "1s"},
            "duplicates": "prevent",
        },
    }
    release.node.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps(poll))
    _wait_ready(release, name)


def _wait_ready(release: Release, name: str) -> None:
    def ready() -> bool:
        poll = release.node.get("poll", name, "-n", NS)
        conditions = poll.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    eventually(ready, f"Poll {name} turning Ready", 300)
    for role in ("actors", "ballots"):
        release.node.kubectl(
            "rollout", "status", "-n", NS, f"deployment/privpoll-{name}-{role}", "--timeout=300s"
        )


def _close_and_count(release: Release, name: str, votes: int) -> dict[str, Any]:
    answer = httpx.post(
        f"{release.ingest}/api/v1/polls/{name}/close", headers=release.admin, timeout=30
    )
    assert answer.status_code == 200, answer.text

    def counted() -> dict[str, Any] | None:
        results = httpx.get(
            f"{release.ingest}/api/v1/polls/{name}/results", headers=release.admin, timeout=30
        ).json()
        done = results["votes"]["total"] >= votes and results["votes"]["storedBallots"] >= 2 * votes
        return results if done else None

    found: dict[str, Any] = eventually(counted, f"the sinks storing {votes} votes", 300)
    return found


def test_a_poll_applied_with_kubectl_runs_its_sinks_and_counts_votes(release: Release) -> None:
    release.node.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "poll.yaml"))
    _wait_ready(release, "lunch")
    tokens = _invitations(release, "lunch")
    with httpx.Client() as client:
        for voter, token in tokens.items():
            assert _vote(client, release, "lunch", voter, token) == 202
    results = _close_and_count(release, "lunch", len(tokens))
    assert results["votes"]["total"] == len(tokens)
    assert results["votes"]["duplicates"] == 0

    def in_status() -> dict[str, Any] | None:
        status: dict[str, Any] = release.node.get("poll", "lunch", "-n", NS).get("status", {})
        return status if "results" in status else None

    status = eventually(in_status, "the results in the Poll's status", 180)
    assert status["turnout"]["votes"] == len(tokens)
    assert status["phase"] == "Closed"


def test_helm_test_passes(release: Release) -> None:
    done = release.helm.run("test", RELEASE, "-n", NS, "--logs", "--timeout", "4m")
    assert "privpoll works" in done.stdout


class Voters(threading.Thread):
    """Votes one voter after another until stopped; remembers every answer.

    All votes come from the node's one address, and the ingest limits each address (120 a
    minute per worker process by default): three a second stays well below that."""

    def __init__(self, release: Release, poll: str, tokens: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.release, self.poll, self.tokens = release, poll, list(tokens.items())
        self.answers: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client() as client:
            for voter, token in self.tokens:
                if self.stop.is_set():
                    return
                self.answers.append((voter, _vote(client, self.release, self.poll, voter, token)))
                time.sleep(0.3)

    def accepted(self) -> int:
        return sum(1 for _, status in self.answers if status == 202)

    def refused(self) -> list[tuple[str, int]]:
        return [(voter, status) for voter, status in self.answers if status != 202]


def _sink_selector(poll: str, role: str) -> str:
    return f"privpoll.dev/poll={poll},app.kubernetes.io/component=sink-{role}"


def test_a_sink_pod_killed_mid_voting_loses_and_doubles_no_vote(release: Release) -> None:
    voters = [f"v{i:04d}" for i in range(240)]
    _apply_poll(release, "crowd", voters)
    voting = Voters(release, "crowd", _invitations(release, "crowd"))
    voting.start()
    eventually(lambda: len(voting.answers) >= 30, "the first votes", 60)
    killed = set()
    for role in ("ballots", "actors"):
        old = release.node.get("pods", "-n", NS, "-l", _sink_selector("crowd", role))["items"]
        assert old, f"no {role} sink pod of crowd"
        killed.add(old[0]["metadata"]["name"])
        release.node.kubectl(
            "delete", "pod", "-n", NS, old[0]["metadata"]["name"], "--grace-period=0", "--force"
        )
    for role in ("actors", "ballots"):

        def replaced(role: str = role) -> bool:
            pods = release.node.get("pods", "-n", NS, "-l", _sink_selector("crowd", role))
            return any(
                p["metadata"]["name"] not in killed
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", [])
                )
                for p in pods["items"]
            )

        eventually(replaced, f"a new {role} sink pod Ready", 180)
    assert voting.is_alive(), "voting ended before the sinks were back: kill earlier"
    voting.join(300)
    assert not voting.is_alive()
    assert voting.refused() == []
    results = _close_and_count(release, "crowd", voting.accepted())
    assert results["votes"] == {
        "total": voting.accepted(),
        "uniqueVoters": voting.accepted(),
        "storedBallots": 2 * voting.accepted(),
        "duplicates": 0,
    }


def test_helm_upgrade_rolls_the_ingest_without_refusing_or_losing_a_vote(
    release: Release,
) -> None:
    _apply_poll(release, "rolling", [f"r{i:04d}" for i in range(900)])
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=ingest"
    before = {
        p["metadata"]["name"] for p in release.node.get("pods", "-n", NS, "-l", selector)["items"]
    }
    voting = Voters(release, "rolling", _invitations(release, "rolling"))
    voting.start()
    eventually(lambda: len(voting.answers) >= 20, "the first votes", 60)
    release.helm.run(
        "upgrade", RELEASE, str(CHART), "-n", NS,
        *release.values("--set-string", "ingest.podAnnotations.privpoll-test/revision=2"),
        "--wait", "--timeout", "4m",
    )  # fmt: skip

    def old_ones_gone() -> set[str] | None:
        pods = release.node.get("pods", "-n", NS, "-l", selector)["items"]
        now = {p["metadata"]["name"] for p in pods}
        return now if now.isdisjoint(before) else None

    # Keep voting until the last old pod has gone: its endpoint leaves while it terminates.
    after = eventually(old_ones_gone, "the old ingest pods gone", 180)
    time.sleep(3)
    voting.stop.set()
    voting.join(60)
    assert len(after) == 2
    assert voting.refused() == []
    results = _close_and_count(release, "rolling", voting.accepted())
    assert results["votes"]["total"] == voting.accepted()
    assert results["votes"]["duplicates"] == 0


def test_helm_uninstall_leaves_only_what_deploy_md_says(release: Release) -> None:
    release.node.kubectl("delete", "polls", "--all", "-n", NS, "--timeout=180s")
    release.helm.run("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m")
    kinds = (
        "deployments,statefulsets,services,configmaps,secrets,serviceaccounts,roles,"
        "rolebindings,networkpolicies,persistentvolumeclaims,pods,jobs"
    )
    left = []
    for item in release.node.get(kinds, "-n", NS)["items"]:
        labels = item["metadata"].get("labels") or {}
        if TEST_LABEL in labels:  # the test's own database
            continue
        if item["metadata"]["name"] in {"default", "kube-root-ca.crt"}:
            continue
        if item["kind"] == "Pod" and item["metadata"].get("deletionTimestamp"):
            continue
        left.append((item["kind"], item["metadata"]["name"]))
    # docs/deploy.md, "Uninstalling": NATS's claims and the auth Secret stay on purpose, and
    # the last `helm test` pod (helm deletes hook resources only before the next test run).
    assert sorted(left) == sorted(
        [
            ("PersistentVolumeClaim", f"data-{RELEASE}-nats-0"),
            ("Pod", f"{RELEASE}-test"),
            ("Secret", RELEASE),
        ]
    )
    crd = release.node.kubectl("get", "crd", "polls.privpoll.dev", check=False)
    assert crd != "", "docs/deploy.md says the Poll CRD stays"
    cluster_wide = release.node.get("clusterroles,clusterrolebindings")["items"]
    assert [
        i["metadata"]["name"]
        for i in cluster_wide
        if (i["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == RELEASE
    ] == []
