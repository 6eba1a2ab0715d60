"""podman for the container tests: the images built by images/build.sh, and containers run
the way Kubernetes runs the chart's (and the operator's) container specs.

A pod here is a podman pod: its containers share one network namespace, as a Kubernetes pod's
do, so the servers answer each other on localhost, and the names the chart renders (the NATS
Service, the database's host) are mapped to 127.0.0.1 in its /etc/hosts. Only the ports the
test itself uses are published, on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from privpoll.local.embedded import free_port
from tests.e2e.controlplane import ROOT
from tests.environment import need

BUILD = ROOT / "images" / "build.sh"
CONTAINERS_CONF = ROOT / "images" / "containers.conf"


def env() -> dict[str, str]:
    """The environment of every podman call: the project's podman settings, not the machine's."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


@functools.cache
def _built() -> str:
    done = subprocess.run(
        ["bash", str(BUILD), "all"], env=env(), capture_output=True, text=True, timeout=1800,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return "error:" + done.stderr[-4000:]
    return done.stdout


def images() -> dict[str, str]:
    """Build (first time: about four minutes) or reuse the images: PRIVPOLL_IMAGE, NATS_IMAGE,
    POSTGRES_IMAGE."""
    need(shutil.which("podman") is not None, "podman (`make podman` installs it)")
    need(shutil.which("runc") is not None, "runc (`make podman` installs it)")
    out = _built()
    if out.startswith("error:"):
        pytest.fail(f"images/build.sh failed:\n{out.removeprefix('error:')}")
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        found[key] = value.strip("'\"")
    return found


def memory(quantity: str) -> str:
    """A Kubernetes memory quantity (512Mi, 1Gi) as podman's --memory takes it."""
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    for suffix, unit in units.items():
        if quantity.endswith(suffix):
            return quantity.removesuffix(suffix) + unit
    if quantity.isdigit():
        return quantity
    raise ValueError(f"memory quantity {quantity!r}: use Ki, Mi or Gi")


def cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity (500m, 1, "2") as podman's --cpus takes it."""
    if quantity.endswith("m"):
        return str(int(quantity[:-1]) / 1000)
    return str(float(quantity))


SecretValues = Mapping[tuple[str, str], str]


@dataclass
class Spec:
    """What `podman run` needs of a Kubernetes container spec and its pod's spec."""

    container: dict[str, Any]
    pod: dict[str, Any] = field(default_factory=dict)
    # (Secret name, key) -> value, for env valueFrom.secretKeyRef.
    secrets: SecretValues = field(default_factory=dict)
    # Volume name -> a host folder to mount instead (configMap, secret or claim volumes).
    folders: Mapping[str, Path] = field(default_factory=dict)
    # The pod's name, for env valueFrom.fieldRef metadata.name.
    pod_name: str = "pod"

    def environment(self) -> dict[str, str]:
        found = {}
        for item in self.container.get("env", []):
            name = item["name"]
            if "value" in item:
                found[name] = str(item["value"])
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                key = (ref["name"], ref["key"])
                assert key in self.secrets, f"env {name}: the test has no Secret {key}"
                found[name] = self.secrets[key]
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                found[name] = self.pod_name
            else:
                raise AssertionError(f"env {name}: cannot resolve {source}")
        return found

    def run_args(self) -> list[str]:
        """podman run flags that do what Kubernetes does with this spec."""
        container, pod = self.container, self.pod
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        args = []
        if "runAsUser" in security:
            user = str(security["runAsUser"])
            if "runAsGroup" in security:
                user += f":{security['runAsGroup']}"
            args.append(f"--user={user}")
        if security.get("readOnlyRootFilesystem"):
            # Kubernetes adds no writable /tmp, /run or /var/tmp of its own; podman would.
            args += ["--read-only", "--read-only-tmpfs=false"]
        for capability in security.get("capabilities", {}).get("drop", []):
            args.append(f"--cap-drop={capability}")
        if security.get("allowPrivilegeEscalation") is False:
            args.append("--security-opt=no-new-privileges")
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args.append(f"--memory={memory(str(limits['memory']))}")
        if "cpu" in limits:
            args.append(f"--cpus={cpus(str(limits['cpu']))}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            name, path = mount["name"], mount["mountPath"]
            volume = volumes.get(name, {})
            if name in self.folders:
                mode = "ro" if mount.get("readOnly") else "rw"
                args.append(f"--volume={self.folders[name]}:{path}:{mode}")
            elif "emptyDir" in volume:
                options = ["rw", "mode=1777"]
                if "sizeLimit" in volume["emptyDir"]:
                    options.append(f"size={memory(str(volume['emptyDir']['sizeLimit']))}")
                args.append(f"--tmpfs={path}:{','.join(options)}")
            else:
                raise AssertionError(f"volume {name}: the test gives it no folder")
        for name, value in self.environment().items():
            args += ["--env", f"{name}={value}"]
        if "command" in container:
            args.append(f"--entrypoint={json.dumps(container['command'])}")
        return args

    def argv(self) -> list[str]:
        return [str(a) for a in self.container.get("args", [])]


@dataclass
class Container:
    name: str

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(podman("inspect", self.name).stdout)[0]["State"]
        return found

    def running(self) -> bool:
        return bool(self.state()["Running"])

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def stop(self, grace: int = 10) -> tuple[float, int]:
        """`podman stop` (SIGTERM, then SIGKILL after ``grace`` seconds): seconds it took and
        the exit code."""
        start = time.monotonic()
        podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        took = time.monotonic() - start
        return took, int(self.state()["ExitCode"])

    def start(self) -> None:
        podman("start", self.name)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def wait_for(
    check: Callable[[], bool], what: str, timeout: float = 60, *, logs: Container | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if logs is not None and not logs.running():
            break
        time.sleep(0.3)
    detail = f"\n--- {logs.name}:\n{logs.logs()[-4000:]}" if logs is not None else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s{detail}")


@dataclass
class Pod:
    """A podman pod: containers on one network namespace, ``ports`` published on 127.0.0.1."""

    name: str
    ports: dict[int, int]
    containers: list[Container] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str, ports: Iterable[int], hosts: Iterable[str] = ()) -> Pod:
        name = f"{prefix}-{secrets.token_hex(3)}"
        published = {port: free_port() for port in ports}
        args = ["pod", "create", "--name", name]
        for inside, outside in published.items():
            args += ["--publish", f"127.0.0.1:{outside}:{inside}"]
        for host in hosts:
            args += ["--add-host", f"{host}:127.0.0.1"]
        podman(*args)
        return cls(name, published)

    def run(self, name: str, image: str, flags: list[str], argv: Sequence[str] = ()) -> Container:
        container = Container(f"{self.name}-{name}")
        podman(
            "run", "--detach", "--pod", self.name, "--name", container.name, *flags, image, *argv
        )
        self.containers.append(container)
        return container

    def remove(self) -> None:
        podman("pod", "rm", "--force", "--time", "0", self.name, check=False, timeout=120)
