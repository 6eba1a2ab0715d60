"""The one-node cluster, rung by rung: containerd runs a container from an imported image,
the kubelet registers a Ready node, the scheduler and controller-manager turn a Deployment
into running pods, kube-proxy and CoreDNS make a Service resolve and route."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from privpoll.local.embedded import free_port
from tests.cluster.cluster import ECHO_IMAGE, NODE_NAME, PAUSE_IMAGE, Cluster
from tests.cluster.conftest import up_to


def eventually(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, AssertionError) as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s (last: {last})")


def test_containerd_runs_containers_of_imported_images(cluster: Cluster) -> None:
    node = up_to(cluster, "runtime")
    images = node.ctr("images", "ls", "-q").stdout.split()
    assert PAUSE_IMAGE in images
    assert ECHO_IMAGE in images
    port = free_port()
    name = f"echo-{uuid.uuid4().hex[:8]}"
    node.ctr("run", "-d", "--net-host", "--env", f"PORT={port}", ECHO_IMAGE, name, "/echo", "serve")
    try:
        answer = eventually(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz"), "echo up", 30)
        assert answer.text == "ok\n"
    finally:
        node.ctr("tasks", "kill", "-s", "SIGTERM", name)
        eventually(
            lambda: "STOPPED" in node.ctr("tasks", "ls").stdout, "the echo container stops", 30
        )
        node.ctr("tasks", "delete", name)
        node.ctr("containers", "delete", name)


def test_the_kubelet_registers_a_ready_node(cluster: Cluster) -> None:
    node = up_to(cluster, "node")
    found = node.get("node", NODE_NAME)
    info = found["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kubeletVersion"] == "v1.34.12"
    ready = [c for c in found["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True", ready


ECHO = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: echo
          image: IMAGE
          imagePullPolicy: Never
          args: [serve]
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: NS}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
"""


def _namespace(node: Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", name)
    eventually(
        lambda: node.kubectl("get", "sa", "default", "-n", name, check=False), "default SA", 60
    )
    return name


def test_a_deployment_gets_ready_pods_on_the_pod_network(cluster: Cluster) -> None:
    node = up_to(cluster, "workloads")
    ns = _namespace(node)
    node.kubectl("apply", "-f", "-", stdin=ECHO.replace("NS", ns).replace("IMAGE", ECHO_IMAGE))
    node.kubectl("rollout", "status", "-n", ns, "deployment/echo", "--timeout=180s")
    pods = node.get("pods", "-n", ns, "-l", "app=echo")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["status"]["podIP"].startswith("10.244.0.")
        # The node reaches each pod over the bridge; the pod answers with its name.
        answer = httpx.get(f"http://{pod['status']['podIP']}:8080/", timeout=10)
        assert answer.text.strip() == pod["metadata"]["name"]
    node.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_service_resolves_through_cluster_dns_and_routes_to_its_pods(cluster: Cluster) -> None:
    node = up_to(cluster, "services")
    ns = _namespace(node)
    node.kubectl("apply", "-f", "-", stdin=ECHO.replace("NS", ns).replace("IMAGE", ECHO_IMAGE))
    node.kubectl("rollout", "status", "-n", ns, "deployment/echo", "--timeout=180s")
    names = {p["metadata"]["name"] for p in node.get("pods", "-n", ns, "-l", "app=echo")["items"]}
    service = node.get("service", "echo", "-n", ns)
    # From the node, through kube-proxy's rules for the ClusterIP (written within a second or
    # so of the Service's endpoints).
    url = f"http://{service['spec']['clusterIP']}/"
    answer = eventually(lambda: httpx.get(url, timeout=10), "kube-proxy routing the Service", 30)
    assert answer.text.strip() in names
    # From a pod, by name: the kubelet's resolv.conf points at CoreDNS's Service.
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "get",
                    "image": ECHO_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["get", "http://echo/"],
                }
            ],
        },
    }
    node.kubectl("apply", "-f", "-", stdin=json.dumps(client))

    def finished() -> str | None:
        phase = str(node.get("pod", "client", "-n", ns)["status"].get("phase", ""))
        return phase if phase in {"Succeeded", "Failed"} else None

    phase = eventually(finished, "the client pod finishing", 120)
    logs = node.kubectl("logs", "-n", ns, "client")
    assert phase == "Succeeded", logs
    assert logs.strip() in names
    node.kubectl("delete", "namespace", ns, "--wait=false")
