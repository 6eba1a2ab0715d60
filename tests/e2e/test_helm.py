"""The Helm chart: lint, render, schema errors, and `helm install` into a real kube-apiserver.

The install tests get a control plane of their own, fresh, so that helm itself installs the
Poll CRD from the chart's crds/ folder. Nothing runs there: every object is validated and
stored by the API server, which is what `helm install` on kind or EKS starts with.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from privpoll.local.embedded import nats_server_binary
from privpoll.settings import Settings
from privpoll_operator import crd, deployments
from tests.e2e.controlplane import ROOT, ControlPlane
from tests.e2e.helm import CHART, Helm, helm, secret_data

__all__ = ["helm"]

EKS = str(CHART / "values-eks.yaml")
MODES: dict[str, list[str]] = {
    "default": [],
    "eks": ["-f", EKS, "--set", "cockroachdb.licenseSecret=license"],
    "production": [
        "--set", "cockroachdb.nodes=3",
        "--set", "nats.replicas=3",
        "--set", "operator.extraNamespaces={team-a}",
        "--set", "ingest.ingress.enabled=true",
        "--set", "ingest.ingress.tls.enabled=true",
        "--set", "ingest.ingress.tls.secretName=poll-tls",
    ],
    "external": [
        "--set", "nats.enabled=false",
        "--set", "nats.external.url=nats://nats.example:4222",
        "--set", "cockroachdb.enabled=false",
        "--set", "database.external.existingSecret=my-dsn",
    ],
}  # fmt: skip
WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def named(docs: list[Any], kind: str, suffix: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"one {kind} named *{suffix}, found {len(found)}"
    result: dict[str, Any] = found[0]
    return result


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_lint_passes_for_the_default_and_the_eks_values(helm: Helm) -> None:
    for values in ([], ["-f", EKS]):
        done = helm.run("lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("mode", MODES)
def test_every_pod_runs_unprivileged_with_limits_and_probes(helm: Helm, mode: str) -> None:
    docs = helm.template(*MODES[mode])
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for doc in workloads:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        pod = pod_spec(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            main = pod["containers"][0]
            assert "livenessProbe" in main, where
            if not doc["metadata"]["name"].endswith("-operator"):
                assert "readinessProbe" in main, where


@pytest.mark.parametrize("mode", MODES)
def test_the_operator_is_told_the_image_it_runs_the_sinks_with(helm: Helm, mode: str) -> None:
    docs = helm.template(
        *MODES[mode], "--set", "image.repository=example/privpoll", "--set", "image.tag=1.2.3"
    )
    operator = pod_spec(named(docs, "Deployment", "-operator"))["containers"][0]
    ingest = pod_spec(named(docs, "Deployment", "-ingest"))["containers"][0]
    env = env_of(operator)
    assert operator["image"] == ingest["image"] == "example/privpoll:1.2.3"
    assert env["PRIVPOLL_SINK_IMAGE"] == "example/privpoll:1.2.3"
    secret, _, key = env["PRIVPOLL_DATABASE_SECRET"].partition(":")
    assert env["PRIVPOLL_DATABASE_URL"] == {"secretKeyRef": {"name": secret, "key": key}}
    assert env["PRIVPOLL_SINK_NATS_URL"] == env["PRIVPOLL_NATS_URL"]
    assert ".svc:" in env["PRIVPOLL_NATS_URL"] or mode == "external", "sinks may run elsewhere"


def test_the_sinks_get_the_resources_and_the_ca_folder_the_chart_sets(helm: Helm) -> None:
    """The operator renders the sinks from its own env: what the chart's values set there is
    what each sink pod gets, and the CA folder is where the DSN's sslrootcert looks."""
    docs = helm.template(
        *MODES["production"], "--set", "operator.sinkResources.limits.memory=300Mi"
    )
    operator = pod_spec(named(docs, "Deployment", "-operator"))["containers"][0]
    env = {e["name"]: e["value"] for e in operator["env"] if "value" in e}
    settings = Settings.from_env(env)
    pod = deployments.sink("lunch", "ballots", settings)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "300Mi"}
    mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
    dsn_secrets = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-database")
    ]
    assert dsn_secrets, "the chart makes the sinks' DSN Secret"
    for secret in dsn_secrets:  # one in each namespace whose sinks read it
        dsn = base64.b64decode(secret["data"]["url"]).decode()
        assert f"sslrootcert={mount}/ca.crt" in dsn


def test_the_chart_ships_the_generated_crd(helm: Helm) -> None:
    crds = [d for d in helm.template() if d["kind"] == "CustomResourceDefinition"]
    assert crds == [crd.poll_crd()]


def test_default_install_is_one_node_of_each_and_insecure_only_inside(helm: Helm) -> None:
    docs = helm.template()
    assert named(docs, "StatefulSet", "-nats")["spec"]["replicas"] == 1
    cockroach = named(docs, "StatefulSet", "-cockroachdb")
    assert cockroach["spec"]["replicas"] == 1
    assert "--insecure" in pod_spec(cockroach)["containers"][0]["args"]
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies == {"pp-privpoll-nats", "pp-privpoll-cockroachdb"}


def test_the_ingest_runs_gevent_workers_unless_told_gthread(helm: Helm) -> None:
    def settings(*values: str) -> Settings:
        ingest = pod_spec(named(helm.template(*values), "Deployment", "-ingest"))
        container = ingest["containers"][0]
        # The one configuration of privpoll up and the image, its settings from the env.
        assert container["command"] == ["gunicorn", "--config", "python:privpoll.web.gunicorn_conf"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        return Settings.from_env(env)

    default = settings()
    assert default.ingest_worker_class == "gevent"
    assert default.http_addr == "0.0.0.0:8000"
    threaded = settings("--set", "ingest.workerClass=gthread", "--set", "ingest.threads=8")
    assert threaded.ingest_worker_class == "gthread"
    assert threaded.ingest_threads == 8


def test_production_values_give_a_tls_cockroachdb_and_a_nats_cluster(helm: Helm) -> None:
    docs = helm.template(*MODES["production"])
    cockroach = named(docs, "StatefulSet", "-cockroachdb")
    args = pod_spec(cockroach)["containers"][0]["args"]
    assert cockroach["spec"]["replicas"] == 3
    assert args[0] == "start"
    assert "--certs-dir=/cockroach/certs" in args
    assert "--insecure" not in args
    assert any(a.startswith("--join=") and a.count(",") == 2 for a in args)
    init = named(docs, "Job", "-cockroachdb-init-1")
    assert "cockroach init" in pod_spec(init)["containers"][0]["args"][0]
    assert "stream_replicas" not in str(docs)  # the setting is passed by its variable name
    operator_env = env_of(pod_spec(named(docs, "Deployment", "-operator"))["containers"][0])
    assert operator_env["PRIVPOLL_STREAM_REPLICAS"] == "3"
    assert operator_env["PRIVPOLL_DATABASE_CA_SECRET"] == "pp-privpoll-database-ca"
    operator_args = pod_spec(named(docs, "Deployment", "-operator"))["containers"][0]["args"]
    assert "--namespace=pp" in operator_args
    assert "--namespace=team-a" in operator_args
    # The sinks of team-a's polls find their DSN and the CA in team-a.
    copies = {
        (d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in docs
        if d["kind"] == "Secret"
    }
    assert {("pp-privpoll-database", "team-a"), ("pp-privpoll-database-ca", "team-a")} <= copies
    ingress = named(docs, "Ingress", "pp-privpoll")
    assert ingress["spec"]["tls"] == [{"hosts": ["poll.example.org"], "secretName": "poll-tls"}]
    ingest_env = env_of(pod_spec(named(docs, "Deployment", "-ingest"))["containers"][0])
    assert ingest_env["PRIVPOLL_PUBLIC_URL"] == "https://poll.example.org"


# Values the schema refuses: `helm lint`, `helm template` and `helm install` all fail.
BROKEN: list[tuple[dict[str, Any], list[str]]] = [
    ({"nats": {"replicas": 2}}, ["at '/nats/replicas': value must be one of 1, 3"]),
    ({"cockroachdb": {"nodes": 5}}, ["at '/cockroachdb/nodes': value must be one of 1, 3"]),
    ({"ingest": {"replica": 3}}, ["at '/ingest'", "additional properties 'replica' not allowed"]),
    ({"ingest": {"workers": "four"}}, ["at '/ingest/workers'", "got string, want integer"]),
    ({"ingest": {"workerClass": "sync"}}, ["at '/ingest/workerClass'", "'gevent', 'gthread'"]),
    ({"publicUrl": "poll.example.org"}, ["at '/publicUrl'"]),
    ({"nats": {"storage": {"size": "5GB"}}}, ["at '/nats/storage/size'", "'5GB' does not match"]),
]


@pytest.mark.parametrize(("values", "messages"), BROKEN)
def test_wrong_values_fail_with_a_message_naming_the_value(
    helm: Helm, tmp_path: Path, values: dict[str, Any], messages: list[str]
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    for command in ("template", "lint"):
        args = [command, str(CHART), "-f", str(path)]
        if command == "template":
            args.insert(1, "pp")
        done = helm.run(*args, check=False)
        assert done.returncode != 0, f"helm {command} accepted {values}"
        said = done.stdout + done.stderr
        for message in messages:
            assert message in said, said


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"cockroachdb": {"enabled": False}},
            "database.external.existingSecret is required when cockroachdb.enabled is false",
        ),
        ({"nats": {"enabled": False}}, "nats.external.url is required when nats.enabled is false"),
    ],
)
def test_a_missing_external_server_is_named(
    helm: Helm, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    """Rules across values: template and install fail; lint (lenient by design) warns."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm.run("template", "pp", str(CHART), "-f", str(path), check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert message in helm.run("lint", str(CHART), "-f", str(path), check=False).stderr


@pytest.mark.parametrize("replicas", [1, 3])
def test_nats_server_accepts_the_rendered_configuration(
    helm: Helm, tmp_path: Path, replicas: int
) -> None:
    docs = helm.template("--set", f"nats.replicas={replicas}")
    conf = named(docs, "ConfigMap", "-nats")["data"]["nats.conf"]
    assert ("cluster {" in conf) is (replicas > 1)
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(path)],
        env={"SERVER_NAME": "pp-privpoll-nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stderr


def _apply_patch(document: Any, patch: dict[str, Any]) -> None:
    """A JSON Patch add/replace, as skaffold applies a profile (the path must exist)."""
    *parents, last = patch["path"].lstrip("/").split("/")
    node = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if patch["op"] == "replace":
        assert last in node, f"{patch['path']} does not exist"
    node[last] = patch["value"]


def test_skaffold_builds_the_image_the_chart_deploys() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    [artifact] = config["build"]["artifacts"]
    assert artifact["image"] == values["image"]["repository"]
    assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    [release] = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == "{{.IMAGE_REPO_privpoll}}"
    assert templates["image.tag"].startswith("{{.IMAGE_TAG_privpoll}}")
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"kind", "eks"}
    for profile in profiles.values():
        patched = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
        for patch in profile.get("patches", []):
            _apply_patch(patched, patch)
        for key in patched["deploy"]["helm"]["releases"][0].get("setValues", {}):
            node = values
            for part in key.split("."):
                assert part in node, f"profile {profile['name']} sets unknown value {key}"
                node = node[part]
        for path in patched["deploy"]["helm"]["releases"][0].get("valuesFiles", []):
            assert (ROOT / path).is_file()


# --- helm install into a real kube-apiserver --------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    fresh = ControlPlane(tmp_path_factory.mktemp("chart-controlplane"))
    try:
        fresh.start()
        yield fresh
    finally:
        fresh.stop()


def installed_objects(helm: Helm, release: str, namespace: str) -> list[dict[str, Any]]:
    manifest = helm.run("get", "manifest", release, "-n", namespace).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def test_helm_install_creates_every_object_through_the_api_server(
    plane: ControlPlane, helm: Helm
) -> None:
    on = helm.on(plane)
    done = on.run("install", "pp", str(CHART), "-n", "pp", "--create-namespace")
    assert "STATUS: deployed" in done.stdout
    assert "kubectl get secret pp-privpoll -n pp" in done.stdout, "NOTES tell how to get the token"

    # helm installed the CRD from crds/, and the API server took its schema.
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    stored = plane.get("crd", "polls.privpoll.dev")["spec"]["versions"][0]["schema"]
    assert stored == crd.poll_crd()["spec"]["versions"][0]["schema"]

    objects = installed_objects(on, "pp", "pp")
    kinds = {doc["kind"] for doc in objects}
    assert {"Deployment", "StatefulSet", "Job", "Service", "Secret", "Role", "RoleBinding"} <= kinds
    assert {"ServiceAccount", "ConfigMap", "NetworkPolicy"} <= kinds
    for doc in objects:
        namespace = doc["metadata"].get("namespace", "pp")
        found = plane.get(doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace)
        assert found["metadata"]["uid"], f"{doc['kind']} {doc['metadata']['name']} not stored"

    # The API server accepts a Poll in the release's namespace (the CRD validates it).
    plane.kubectl("apply", "-n", "pp", "-f", str(ROOT / "examples" / "poll.yaml"))
    assert plane.get("poll", "lunch", "-n", "pp")["spec"]["choices"] == ["pizza", "sushi", "tacos"]
    plane.kubectl("delete", "poll", "lunch", "-n", "pp")


def test_every_mode_installs_and_its_helm_test_pod_is_valid(
    plane: ControlPlane, helm: Helm
) -> None:
    on = helm.on(plane)
    plane.kubectl("create", "namespace", "team-a", check=False)
    for mode, values in MODES.items():
        namespace = f"mode-{mode}"
        on.run("install", mode, str(CHART), "-n", namespace, "--create-namespace", *values)
        # The hook pod is only created by `helm test`; the API server checks it now (its
        # ServiceAccount exists since the install).
        rendered = on.run(
            "template", mode, str(CHART), "-n", namespace, *values,
            "--show-only", "templates/tests/smoke.yaml",
        ).stdout  # fmt: skip
        pod = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Pod"]
        done = plane.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-f", "-",
            stdin=yaml.safe_dump_all(pod), check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{mode}: {done.stderr}"


def _openssl(*args: str, stdin: str) -> str:
    done = subprocess.run(
        ["openssl", *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_generated_secrets_are_kept_across_upgrades_and_reinstalls(
    plane: ControlPlane, helm: Helm, tmp_path: Path
) -> None:
    assert shutil.which("openssl"), "openssl checks the generated certificates"
    on = helm.on(plane)
    production = MODES["production"][:4]  # 3 CockroachDB nodes with TLS, a NATS cluster
    on.run("install", "keep", str(CHART), "-n", "keep", "--create-namespace", *production)

    def secrets() -> dict[str, dict[str, str]]:
        names = ["keep-privpoll", "keep-privpoll-database"]
        names += ["keep-privpoll-cockroachdb-node-certs", "keep-privpoll-cockroachdb-client-certs"]
        return {name: secret_data(plane, "keep", name) for name in names}

    first = secrets()
    assert len(first["keep-privpoll"]["admin-token"]) >= 32
    assert len(first["keep-privpoll"]["secret"]) >= 32
    dsn = first["keep-privpoll-database"]["url"]
    assert dsn.startswith("postgresql://privpoll:")
    assert first["keep-privpoll-database"]["password"] in dsn
    assert "sslmode=verify-full" in dsn
    assert "@keep-privpoll-cockroachdb-public.keep.svc:26257/privpoll" in dsn

    # The node certificate is signed by the CA and names the Service clients connect to.
    node = first["keep-privpoll-cockroachdb-node-certs"]
    ca = tmp_path / "ca.crt"
    ca.write_text(node["ca.crt"])
    _openssl("verify", "-CAfile", str(ca), stdin=node["node.crt"])
    names = _openssl("x509", "-noout", "-subject", "-ext", "subjectAltName", stdin=node["node.crt"])
    assert "CN=node" in names.replace(" ", "")
    assert "DNS:keep-privpoll-cockroachdb-public.keep.svc" in names
    assert "DNS:*.keep-privpoll-cockroachdb.keep.svc" in names
    client = first["keep-privpoll-cockroachdb-client-certs"]
    _openssl("verify", "-CAfile", str(ca), stdin=client["client.root.crt"])

    on.run("upgrade", "keep", str(CHART), "-n", "keep", *production, "--set", "ingest.replicas=3")
    assert secrets() == first, "an upgrade keeps the tokens' key, the password and the CA"
    jobs = {j["metadata"]["name"] for j in plane.get("jobs", "-n", "keep")["items"]}
    assert jobs == {"keep-privpoll-cockroachdb-init-2"}, "the init Job runs again, renamed"

    on.run("uninstall", "keep", "-n", "keep")
    kept = secret_data(plane, "keep", "keep-privpoll")
    assert kept == first["keep-privpoll"], "uninstall keeps the admin token and HMAC key"
    on.run("install", "keep", str(CHART), "-n", "keep", *production)
    assert secret_data(plane, "keep", "keep-privpoll") == first["keep-privpoll"]


# Resource rows of `kubectl auth can-i --list`: what each account may do in a namespace.
SELF_REVIEWS = {
    "selfsubjectreviews.authentication.k8s.io": "create",
    "selfsubjectaccessreviews.authorization.k8s.io": "create",
    "selfsubjectrulesreviews.authorization.k8s.io": "create",
}
OPERATOR_RULES = {
    **SELF_REVIEWS,
    "polls.privpoll.dev": "list watch patch",
    "polls.privpoll.dev/status": "patch",
    "deployments.apps": "create patch delete",
    "deployments.apps/scale": "patch",
    "configmaps": "get",
    "secrets": "get",
    "events": "create",
}
ROW = re.compile(r"^(\S+)\s+\[[^\]]*\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$")


def rules(plane: ControlPlane, account: str, namespace: str) -> dict[str, str]:
    table = plane.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={account}").stdout
    found: dict[str, str] = {}
    for line in table.splitlines()[1:]:
        match = ROW.match(line)
        if match:
            found[match[1]] = " ".join(sorted(match[2].split()))
    return found


def can(plane: ControlPlane, account: str, *request: str) -> bool:
    done = plane.kubectl("auth", "can-i", *request, f"--as={account}", check=False)
    return done.stdout.strip() == "yes"


def test_the_roles_allow_what_each_component_does_and_nothing_more(
    plane: ControlPlane, helm: Helm
) -> None:
    on = helm.on(plane)
    for namespace in ("team-a", "elsewhere"):
        plane.kubectl("create", "namespace", namespace, check=False)
    on.run(
        "install", "rbac", str(CHART), "-n", "rbac", "--create-namespace",
        "--set", "operator.extraNamespaces={team-a}",
    )  # fmt: skip
    operator = "system:serviceaccount:rbac:rbac-privpoll-operator"

    def normal(table: dict[str, str]) -> dict[str, str]:
        return {k: " ".join(sorted(v.split())) for k, v in table.items()}

    # The whole list, in each namespace: exactly the operator's reactions, nothing else.
    assert rules(plane, operator, "rbac") == normal(OPERATOR_RULES)
    assert rules(plane, operator, "team-a") == normal(OPERATOR_RULES)
    assert rules(plane, operator, "elsewhere") == normal(SELF_REVIEWS)
    assert rules(plane, operator, "kube-system") == normal(SELF_REVIEWS)

    allowed: list[tuple[str, ...]] = [
        ("watch", "polls.privpoll.dev", "-n", "rbac"),
        ("patch", "polls.privpoll.dev", "--subresource=status", "-n", "team-a"),
        ("create", "deployments.apps", "-n", "team-a"),
        ("get", "secrets", "-n", "rbac"),
        ("get", "configmaps", "-n", "team-a"),
    ]
    for request in allowed:
        assert can(plane, operator, *request), request
    denied: list[tuple[str, ...]] = [
        ("get", "secrets", "-n", "elsewhere"),
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "-n", "rbac"),
        ("list", "secrets", "--all-namespaces"),
        ("list", "deployments.apps", "--all-namespaces"),
        ("get", "deployments.apps", "-n", "rbac"),
        ("list", "polls.privpoll.dev", "--all-namespaces"),
        ("list", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "polls.privpoll.dev", "-n", "rbac"),
        ("delete", "polls.privpoll.dev", "-n", "rbac"),
        ("create", "pods", "-n", "rbac"),
        ("create", "roles.rbac.authorization.k8s.io", "-n", "rbac"),
        ("create", "deployments.apps", "-n", "elsewhere"),
    ]
    for request in denied:
        assert not can(plane, operator, *request), request

    ingest = "system:serviceaccount:rbac:rbac-privpoll-ingest"
    assert rules(plane, ingest, "rbac") == normal({**SELF_REVIEWS, "polls.privpoll.dev": "create"})
    tester = "system:serviceaccount:rbac:rbac-privpoll-test"
    assert rules(plane, tester, "rbac") == normal(
        {**SELF_REVIEWS, "polls.privpoll.dev": "create get delete"}
    )
