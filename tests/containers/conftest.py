"""The image as the chart runs it: the manifests `helm template` renders, run with podman.

One pod for the session holds NATS (the chart's StatefulSet spec and its rendered nats.conf)
and PostgreSQL (the chart's external-database option: a Secret with the DSN). The tests add
privpoll's containers to it, each from the spec the chart or the operator renders.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from privpoll.bus import naming
from privpoll.db import migrations, storage
from privpoll.settings import Settings
from privpoll_operator import deployments
from tests.containers.podman import Container, Pod, Spec, images, wait_for
from tests.e2e.helm import Helm, helm

__all__ = ["helm"]

RELEASE = "pp"
NAMESPACE = "pp"
# The external database's Secret (database.external.existingSecret) and the host in its DSN.
DATABASE_SECRET = "privpoll-db"
DATABASE_HOST = "privpoll-db"
INGEST_PORT, NATS_PORT, POSTGRES_PORT = 8000, 4222, 5432
# The bound on `podman stop` (SIGTERM, exit 0) for every long-running role.
STOP_WITHIN = 5.0


@dataclass
class Chart:
    """The chart's manifests, rendered for images built here and an external PostgreSQL."""

    manifests: list[dict[str, Any]]
    database_password: str

    @property
    def database_url(self) -> str:
        """The DSN in the external database's Secret, at the host the pod maps to itself."""
        return (
            f"postgresql://privpoll:{self.database_password}@{DATABASE_HOST}:{POSTGRES_PORT}"
            "/privpoll"
        )

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.manifests:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"the chart renders no {kind} {name}")

    @property
    def secrets(self) -> dict[tuple[str, str], str]:
        """Every Secret value a container may ask for: the chart's and the database's."""
        found = {(DATABASE_SECRET, "url"): self.database_url}
        for doc in self.manifests:
            if doc["kind"] == "Secret":
                for key, value in (doc.get("data") or {}).items():
                    found[(doc["metadata"]["name"], key)] = base64.b64decode(value).decode()
        return found

    def spec(self, kind: str, name: str, container: str, **extra: Any) -> Spec:
        pod = self.find(kind, name)["spec"]["template"]["spec"]
        (found,) = [c for c in pod["containers"] if c["name"] == container]
        return Spec(found, pod, self.secrets, **extra)

    def ingest(self) -> Spec:
        return self.spec("Deployment", f"{RELEASE}-privpoll-ingest", "ingest")

    def operator(self) -> Spec:
        return self.spec("Deployment", f"{RELEASE}-privpoll-operator", "operator")

    def sink(self, poll: str, role: naming.Role) -> Spec:
        """The sink Deployment the operator would create, from the operator's environment."""
        settings = Settings.from_env(self.operator().environment())
        pod = deployments.sink(poll, role, settings)["spec"]["template"]["spec"]
        return Spec(pod["containers"][0], pod, self.secrets)

    def image(self) -> str:
        return str(self.ingest().container["image"])


@pytest.fixture(scope="session")
def built() -> dict[str, str]:
    return images()


@pytest.fixture(scope="session")
def chart(built: dict[str, str], helm: Helm) -> Chart:
    password = secrets.token_hex(12)
    repository, _, tag = built["PRIVPOLL_IMAGE"].rpartition(":")
    nats_repository, _, nats_tag = built["NATS_IMAGE"].rpartition(":")
    manifests = helm.template(
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"nats.image.repository={nats_repository}", "--set", f"nats.image.tag={nats_tag}",
        "--set", "cockroachdb.enabled=false",
        "--set", f"database.external.existingSecret={DATABASE_SECRET}",
        "--set", "ingest.replicas=1",
        release=RELEASE, namespace=NAMESPACE,
    )  # fmt: skip
    return Chart(manifests, password)


@dataclass
class Backend:
    """The session's pod with NATS and PostgreSQL running, and where the test reaches them."""

    pod: Pod
    chart: Chart
    nats: Container
    postgres: Container

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.pod.ports[NATS_PORT]}"

    @property
    def database_url(self) -> str:
        return self.chart.database_url.replace(
            f"@{DATABASE_HOST}:{POSTGRES_PORT}/", f"@127.0.0.1:{self.pod.ports[POSTGRES_PORT]}/"
        )

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.pod.ports[INGEST_PORT]}"

    def run(self, name: str, spec: Spec, argv: list[str] | None = None) -> Container:
        """A container of the chart's (or the operator's) spec in the pod."""
        return self.pod.run(
            name,
            str(spec.container["image"]),
            spec.run_args(),
            spec.argv() if argv is None else argv,
        )


def _database_ready(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def backend(chart: Chart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("containers")
    nats_name = f"{RELEASE}-privpoll-nats"
    nats_host = f"{nats_name}.{NAMESPACE}.svc"
    pod = Pod.create(
        "privpoll-test", [INGEST_PORT, NATS_PORT, POSTGRES_PORT], [nats_host, DATABASE_HOST]
    )
    try:
        config, data = root / "nats-config", root / "nats-data"
        config.mkdir()
        data.mkdir()
        data.chmod(0o777)  # what fsGroup does for the StatefulSet's volume
        for key, value in chart.find("ConfigMap", nats_name)["data"].items():
            (config / key).write_text(value)
        nats_spec = chart.spec(
            "StatefulSet", nats_name, "nats", folders={"config": config, "data": data},
            pod_name=f"{nats_name}-0",
        )  # fmt: skip
        nats = pod.run(
            "nats", str(nats_spec.container["image"]), nats_spec.run_args(), nats_spec.argv()
        )
        postgres = pod.run(
            "postgres",
            images()["POSTGRES_IMAGE"],
            [
                "--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL",
                "--tmpfs=/tmp:rw,mode=1777", "--tmpfs=/var/lib/postgresql/data:rw,mode=1777",
                "--env=POSTGRES_USER=privpoll", "--env=POSTGRES_DB=privpoll",
                f"--env=POSTGRES_PASSWORD={chart.database_password}",
            ],
        )  # fmt: skip
        running = Backend(pod, chart, nats, postgres)
        wait_for(lambda: _database_ready(running.database_url), "PostgreSQL", logs=postgres)
        # What the operator does at its start (privpoll up does it too): the schema.
        with storage.connect(running.database_url) as conn:
            migrations.migrate(conn)
        wait_for(lambda: "Server is ready" in nats.logs(), "NATS", logs=nats)
        yield running
    finally:
        pod.remove()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def with_env(spec: Spec, **values: str) -> Spec:
    """The same spec with some environment variables set to other values."""
    container = copy.deepcopy(spec.container)
    kept = [e for e in container.get("env", []) if e["name"] not in values]
    container["env"] = kept + [{"name": k, "value": v} for k, v in values.items()]
    return Spec(container, spec.pod, spec.secrets, spec.folders, spec.pod_name)


def local_ingest(chart: Chart) -> Spec:
    """The chart's ingest, provisioning polls itself: no Kubernetes API or operator here."""
    return with_env(chart.ingest(), PRIVPOLL_CONTROL_PLANE="local")
