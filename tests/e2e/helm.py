"""helm for the chart tests: built from its Go module by tests/helm/build.sh (cached under
~/.cache/privpoll/bin), run with its own config and cache folders so it touches nothing of
the user's."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controlplane import ROOT, ControlPlane
from tests.environment import need

BUILD = ROOT / "tests" / "helm" / "build.sh"
CHART = ROOT / "charts" / "privpoll"


@functools.cache
def _built() -> str | None:
    done = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        return f"building helm failed:\n{done.stderr[-4000:]}"
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "HELM_BIN":
            return "bin:" + value.strip("'\"")
    return f"tests/helm/build.sh printed no HELM_BIN:\n{done.stdout}"


def helm_binary() -> str:
    """The pinned helm (first time: go install, about two minutes)."""
    need(shutil.which("go") is not None, "Go (to build helm)")
    found = _built()
    if found is None or not found.startswith("bin:"):
        pytest.fail(found or "building helm failed")
    return found.removeprefix("bin:")


@dataclass
class Helm:
    binary: str
    home: Path
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
        return done

    def template(self, *values: str, release: str = "pp", namespace: str = "pp") -> list[Any]:
        """The rendered manifests (CRDs included) as dicts; `values` are helm flags."""
        done = self.run("template", release, str(CHART), "-n", namespace, "--include-crds", *values)
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def on(self, plane: ControlPlane) -> Helm:
        return Helm(self.binary, self.home, plane.kubeconfig)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


def secret_data(plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    """A Secret's data, decoded."""
    import base64

    found = plane.get("secret", name, "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}


def service_account_kubeconfig(
    plane: ControlPlane, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with a token from the
    TokenRequest API (`kubectl create token`), as a pod of that account would."""
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {"server": plane.server, "certificate-authority": plane.ca},
                    }
                ],
                "users": [{"name": account, "user": {"token": token.strip()}}],
                "contexts": [
                    {
                        "name": account,
                        "context": {"cluster": "test", "user": account, "namespace": namespace},
                    }
                ],
                "current-context": account,
            }
        )
    )
    return path
