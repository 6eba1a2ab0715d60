"""The image, run as the chart runs it: read-only root filesystem, user 10001, no capabilities,
the chart's memory and CPU limits, a tmpfs where the chart mounts an emptyDir.

The default command failing to serve /healthz is what the image shipped with before the
Dockerfile installed its dependencies from pyproject's list and gunicorn's gevent extra
(docs/deploy.md, "What the container tests prove").
"""

from __future__ import annotations

import json
import secrets
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from privpoll.bus import naming
from privpoll.local.embedded import free_port
from tests.containers.conftest import (
    NAMESPACE,
    RELEASE,
    STOP_WITHIN,
    Backend,
    Chart,
    answers,
    local_ingest,
    with_env,
)
from tests.containers.podman import Container, podman, wait_for
from tests.e2e.controlplane import ROOT, ControlPlane, control_plane

__all__ = ["control_plane"]

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def assert_stops(container: Container) -> None:
    took, code = container.stop(grace=int(STOP_WITHIN * 3))
    logs = container.logs()[-3000:]
    assert code == 0, f"{container.name} exited {code} after SIGTERM\n{logs}"
    assert took < STOP_WITHIN, f"{container.name} took {took:.1f} s to stop\n{logs}"
    assert "Traceback" not in logs, logs


def test_privpoll_version(chart: Chart) -> None:
    spec = chart.sink("lunch", "actors")
    done = podman("run", "--rm", *spec.run_args(), spec.container["image"], "--version")
    assert done.stdout.strip() == f"privpoll {VERSION}", done.stdout + done.stderr


def test_the_default_command_serves_healthz(
    chart: Chart, backend: Backend, containers: list[Container]
) -> None:
    spec = local_ingest(chart)
    spec.container.pop("command", None)
    spec.container.pop("args", None)
    ingest = backend.run("default-command", spec)
    containers.append(ingest)
    wait_for(lambda: answers(f"{backend.ingest_url}/healthz"), "/healthz", logs=ingest)
    # Ready: NATS and PostgreSQL answer the ingest inside the pod, at the chart's addresses.
    wait_for(lambda: answers(f"{backend.ingest_url}/readyz"), "/readyz", logs=ingest)
    assert_stops(ingest)


def test_the_charts_ingest_serves_and_stops(
    chart: Chart, backend: Backend, containers: list[Container]
) -> None:
    ingest = backend.run("ingest", local_ingest(chart))
    containers.append(ingest)
    wait_for(lambda: answers(f"{backend.ingest_url}/readyz"), "/readyz", logs=ingest)
    response = httpx.get(f"{backend.ingest_url}/api/v1/openapi.json", timeout=10)
    assert response.status_code == 200
    assert_stops(ingest)


def test_the_remixer_stops(chart: Chart, backend: Backend, containers: list[Container]) -> None:
    sink = chart.sink("lunch", "ballots")
    remixer = backend.run("remixer", sink, ["remixer"])
    containers.append(remixer)
    # It has no port to ask: long enough to be connected and inside its loop.
    time.sleep(3)
    assert remixer.running(), remixer.logs()
    assert_stops(remixer)


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def service_account(chart: Chart, plane: ControlPlane, folder: Path) -> dict[str, str]:
    """What a pod of the chart's operator gets: its ServiceAccount, Role and RoleBinding
    applied as the chart renders them, and a token, CA and namespace in the folder that
    Kubernetes mounts at SERVICE_ACCOUNT_DIR. Returns the environment naming the API server."""
    account = f"{RELEASE}-privpoll-operator"
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        plane.kubectl(
            "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(chart.find(kind, account))
        )
    token = plane.kubectl("create", "token", account, "-n", NAMESPACE).stdout.strip()
    folder.mkdir()
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(Path(plane.ca).read_bytes())
    (folder / "namespace").write_text(NAMESPACE)
    for item in folder.iterdir():
        item.chmod(0o644)
    address = urlsplit(plane.server)
    return {
        "KUBERNETES_SERVICE_HOST": str(address.hostname),
        "KUBERNETES_SERVICE_PORT": str(address.port),
    }


def test_the_operator_stops(
    chart: Chart,
    backend: Backend,
    containers: list[Container],
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    """kopf as the chart runs it, with the chart's ServiceAccount and Role, against a real API
    server on this machine's loopback.

    The API server listens on loopback only, so this container shares the host's network
    rather than the pod's: the chart's liveness port becomes a free one, and NATS and the
    database are reached at the ports the pod publishes.
    """
    control_plane.kubectl("apply", "-f", str(ROOT / "charts" / "privpoll" / "crds" / "poll.yaml"))
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    folder = tmp_path / "serviceaccount"
    api = service_account(chart, control_plane, folder)
    port = free_port()
    spec = with_env(
        chart.operator(),
        PRIVPOLL_NATS_URL=backend.nats_url,
        PRIVPOLL_DATABASE_URL=backend.database_url,
        **api,
    )
    args = [a.replace(":8080/", f":{port}/") for a in spec.argv()]
    assert args != spec.argv(), "the chart's liveness address changed: update this test"
    name = f"{backend.pod.name}-operator"
    podman(
        "run", "--detach", "--name", name, "--network=host",
        f"--volume={folder}:{SERVICE_ACCOUNT_DIR}:ro",
        *spec.run_args(), spec.container["image"], *args,
    )  # fmt: skip
    operator = Container(name)
    containers.append(operator)
    wait_for(
        lambda: answers(f"http://127.0.0.1:{port}/healthz"),
        "the operator's liveness",
        logs=operator,
    )
    # Within its Role it provisions a Poll and creates the sink Deployments whose specs the
    # end-to-end test runs (chart.sink).
    poll = yaml.safe_load((ROOT / "examples" / "poll.yaml").read_text())
    poll["metadata"]["name"] = name = f"op{secrets.token_hex(3)}"
    control_plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(poll))

    def ready() -> bool:
        status = control_plane.get("poll", name, "-n", NAMESPACE).get("status", {})
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    wait_for(ready, f"the Poll {name} to turn Ready", logs=operator)
    for role in naming.ROLES:
        found = control_plane.get("deployment", f"privpoll-{name}-{role}", "-n", NAMESPACE)
        (container,) = found["spec"]["template"]["spec"]["containers"]
        expected = chart.sink(name, role).container
        # The API server adds its defaults (imagePullPolicy, terminationMessage*).
        assert {key: container.get(key) for key in expected} == expected
    assert_stops(operator)


def test_the_image_keeps_none_of_the_builders_pip_settings(chart: Chart) -> None:
    """images/build.sh hands pip its index settings and CA as build secrets: none stays."""
    image = chart.image()
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert not [e for e in config.get("Env", []) if e.startswith("PIP_")], config["Env"]
    done = podman(
        "run", "--rm", "--user=0", "--entrypoint=/bin/sh", image, "-c",
        "/opt/privpoll/bin/python -m pip config list;"
        " find / -xdev \\( -name pip.conf -o -name pip-cert \\) -print",
    )  # fmt: skip
    assert done.stdout.strip() == "", done.stdout
