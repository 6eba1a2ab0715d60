"""The whole story on a real cluster: kind, `skaffold run -p kind`, then `helm test` (a pod
that creates a Poll, votes through the API, closes it and reads the results) and a Poll
applied with kubectl the way docs/deploy.md tells.

It needs a Docker engine, kind and skaffold, and skips without them (this machine has only
the Docker client). Set PRIVPOLL_KIND_CLUSTER to use an existing kind cluster; otherwise one
named privpoll-e2e is created and deleted afterwards (PRIVPOLL_KIND_KEEP=1 keeps it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.controlplane import ROOT
from tests.e2e.helm import Helm, helm
from tests.environment import cannot_run_in_ci

__all__ = ["helm"]

NAMESPACE = "privpoll"
RELEASE = "privpoll"


def _why_not() -> str | None:
    if shutil.which("docker") is None:
        return "Docker is not installed, and kind runs its nodes in Docker containers"
    engine = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if engine.returncode != 0:
        return (
            "no Docker engine is reachable (`docker info` failed), and kind runs its nodes in one"
        )
    for tool in ("kind", "skaffold", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed; this test needs Docker, kind, skaffold and kubectl"
    return None


class Cluster:
    def __init__(self, context: str, workdir: Path, helm: Helm) -> None:
        self.context = context
        self.bin = workdir / "bin"
        self.bin.mkdir(exist_ok=True)
        # skaffold calls `helm`: the pinned one the other chart tests use.
        (self.bin / "helm").symlink_to(helm.binary)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def run(
        self, *argv: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--context", self.context, *args, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, helm: Helm) -> Iterator[Cluster]:
    reason = _why_not()
    if reason:
        cannot_run_in_ci(reason)
    name = os.environ.get("PRIVPOLL_KIND_CLUSTER", "")
    created = not name
    name = name or "privpoll-e2e"
    found = Cluster(f"kind-{name}", tmp_path_factory.mktemp("kind"), helm)
    if created:
        found.run("kind", "create", "cluster", "--name", name, "--wait", "180s", timeout=900)
    try:
        found.run(
            "skaffold", "run", "-p", "kind", "--kube-context", found.context,
            "--filename", str(ROOT / "skaffold.yaml"), "--status-check=true",
            timeout=1800,
        )  # fmt: skip
        yield found
    finally:
        found.run("skaffold", "delete", "-p", "kind", "--kube-context", found.context, check=False)
        if created and os.environ.get("PRIVPOLL_KIND_KEEP") != "1":
            found.run("kind", "delete", "cluster", "--name", name, check=False)


def test_every_pod_is_ready_and_runs_as_non_root(cluster: Cluster) -> None:
    pods = cluster.get("pods", "-n", NAMESPACE)["items"]
    long_running = [p for p in pods if p["metadata"].get("ownerReferences", [{}])[0].get("kind")]
    assert long_running
    for pod in long_running:
        if pod["status"].get("phase") == "Succeeded":
            continue  # the CockroachDB init Job
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert conditions.get("Ready") == "True", pod["metadata"]["name"]
    ingest = cluster.kubectl(
        "exec", "-n", NAMESPACE, f"deployment/{RELEASE}-ingest", "--", "id", "-u"
    )
    assert ingest.stdout.strip() == "10001"


def test_helm_test_creates_a_poll_votes_and_reads_the_results(cluster: Cluster) -> None:
    done = cluster.run(
        "helm", "test", RELEASE, "-n", NAMESPACE, "--kube-context", cluster.context,
        "--logs", "--timeout", "10m",
    )  # fmt: skip
    assert "privpoll works" in done.stdout


def test_a_poll_applied_with_kubectl_gets_its_sinks(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "poll.yaml"))
    try:
        deadline = time.monotonic() + 300
        while True:
            poll = cluster.get("poll", "lunch", "-n", NAMESPACE)
            ready = [
                c for c in poll.get("status", {}).get("conditions", []) if c["type"] == "Ready"
            ]
            if ready and ready[0]["status"] == "True":
                break
            assert time.monotonic() < deadline, f"the Poll never turned Ready: {poll.get('status')}"
            time.sleep(3)
        for role in ("actors", "ballots"):
            cluster.kubectl(
                "rollout", "status", "-n", NAMESPACE, f"deployment/privpoll-lunch-{role}",
                "--timeout=300s",
            )  # fmt: skip
    finally:
        cluster.kubectl("delete", "poll", "lunch", "-n", NAMESPACE, "--timeout=120s", check=False)
