"""A real Kubernetes control plane for tests: etcd and kube-apiserver, built from their Go
modules by tests/controlplane/build.sh (cached under ~/.cache/privpoll/bin), on loopback.

There is no scheduler, controller-manager or kubelet: objects are stored and validated, no pod
runs, and no garbage collector deletes what owner references point at.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from privpoll.local.embedded import free_port
from tests.environment import need

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tests" / "controlplane" / "build.sh"


def binaries(*targets: str) -> dict[str, str]:
    """Build (first time: minutes) or find the cached etcd, kube-apiserver and kubectl;
    with the target "cluster" also kubelet, kube-scheduler, kube-controller-manager,
    kube-proxy and CoreDNS."""
    need(shutil.which("go") is not None, "Go (to build etcd and kube-apiserver)")
    need(shutil.which("openssl") is not None, "openssl (for the service-account key)")
    done = subprocess.run(
        ["bash", str(BUILD), *targets], capture_output=True, text=True, timeout=5400, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"building the control plane failed:\n{done.stderr[-4000:]}")
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key] = value.strip("'\"")
    return found


@dataclass
class ControlPlane:
    root: Path
    server: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    kubectl_bin: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Where the API server listens: loopback unless pods must reach it (tests/cluster).
    host: str = "127.0.0.1"
    authorization: str = "RBAC"
    # Appended to kube-apiserver's flags; a repeated flag overrides the one above it.
    apiserver_args: list[str] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def ca(self) -> str:
        """The self-signed certificate the API server made for itself, with its own CA."""
        return str(self.root / "certs" / "apiserver.crt")

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), **extra}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.kubectl_bin, *args],
            input=stdin,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def start(self, *targets: str) -> None:
        bins = binaries(*targets)
        self.kubectl_bin = bins["KUBECTL_BIN"]
        self.root.mkdir(parents=True, exist_ok=True)
        client_port, peer_port, secure_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        self._spawn(
            "etcd",
            [
                bins["ETCD_BIN"],
                "--name", "controlplane",
                "--data-dir", str(self.root / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"controlplane=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ],
        )  # fmt: skip
        self._wait(lambda: httpx.get(f"{etcd_url}/health").status_code == 200, "etcd")
        key, pub = self.root / "sa.key", self.root / "sa.pub"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )
        (self.root / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        self.server = f"https://{self.host}:{secure_port}"
        self._spawn(
            "kube-apiserver",
            [
                bins["KUBE_APISERVER_BIN"],
                "--etcd-servers", etcd_url,
                "--bind-address", self.host,
                "--advertise-address", self.host,
                # A loopback address cannot back the kubernetes Service's endpoints.
                "--endpoint-reconciler-type", "none" if self.host == "127.0.0.1" else "lease",
                "--profiling=false",
                "--secure-port", str(secure_port),
                "--cert-dir", str(self.root / "certs"),
                "--authorization-mode", self.authorization,
                "--token-auth-file", str(self.root / "tokens.csv"),
                "--service-account-key-file", str(pub),
                "--service-account-signing-key-file", str(key),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--allow-privileged",
                *self.apiserver_args,
            ],
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {self.token}"}

        def ready() -> bool:
            answer = httpx.get(f"{self.server}/readyz", headers=auth, verify=False)  # noqa: S501
            return answer.status_code == 200

        self._wait(ready, "kube-apiserver", timeout=120)
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {"server": self.server, "certificate-authority": self.ca},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": self.token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                    "current-context": "test",
                }
            )
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait(self, check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[-1].poll() is not None:
                break
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        log = (self.root / f"{what}.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{what} did not get ready:\n{log}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
