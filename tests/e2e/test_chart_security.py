"""Who may reach NATS and the database: the chart's NetworkPolicies, evaluated on the pods the
chart renders and on the sink pods the operator creates.

No cluster enforces policies here (there is no CNI), so the test applies the NetworkPolicy
rules itself: a pod may connect when some `from` peer of the server's policy selects both the
pod's labels and its namespace's labels.
"""

from __future__ import annotations

from typing import Any

import pytest

from privpoll.bus import naming
from privpoll.settings import Settings
from privpoll_operator import deployments
from tests.e2e.helm import Helm, helm
from tests.e2e.test_helm import MODES, WORKLOADS, pod_spec

__all__ = ["helm"]

RELEASE = NAMESPACE = "pp"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for rule in selector.get("matchExpressions", []):
        key, op, values = rule["key"], rule["operator"], rule.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def admits(policy: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    """Whether an ingress NetworkPolicy in NAMESPACE lets this pod connect."""
    namespace_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            if "namespaceSelector" in peer:
                same_place = selects(peer["namespaceSelector"], namespace_labels)
            else:
                same_place = namespace == NAMESPACE
            if same_place and selects(peer.get("podSelector", {}), labels):
                return True
    return False


def pods(docs: list[dict[str, Any]], watched: list[str]) -> dict[str, tuple[dict[str, str], str]]:
    """Every pod that could ask: the chart's, the operator's sinks where it serves polls and
    where it does not, and two strangers. Name -> (labels, namespace)."""
    found: dict[str, tuple[dict[str, str], str]] = {}
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            meta = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]
            found[doc["metadata"]["name"]] = (
                meta["labels"],
                doc["metadata"].get("namespace", NAMESPACE),
            )
    for namespace in [*watched, "elsewhere"]:
        for role in naming.ROLES:
            sink = deployments.sink("lunch", role, Settings())
            labels = sink["spec"]["template"]["metadata"]["labels"]
            found[f"sink-{role}@{namespace}"] = (labels, namespace)
    found["stranger"] = ({"app": "curious"}, NAMESPACE)
    other = dict(found[f"{RELEASE}-privpoll-ingest"][0], **{"app.kubernetes.io/instance": "other"})
    found["another release's ingest"] = (other, NAMESPACE)
    return found


@pytest.mark.parametrize("mode", ["default", "production"])
def test_only_the_ingest_the_operator_and_the_sinks_reach_nats_and_the_database(
    helm: Helm, mode: str
) -> None:
    docs = helm.template(*MODES[mode], release=RELEASE, namespace=NAMESPACE)
    watched = [NAMESPACE, "team-a"] if mode == "production" else [NAMESPACE]
    everyone = pods(docs, watched)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {f"{RELEASE}-privpoll-nats", f"{RELEASE}-privpoll-cockroachdb"}
    sinks = {f"sink-{role}@{ns}" for role in naming.ROLES for ns in watched}
    base = f"{RELEASE}-privpoll"
    init = {name for name in everyone if name.startswith(f"{base}-cockroachdb-init-")}
    assert init, "the Job that initialises CockroachDB is rendered"
    servers = {"nats": {f"{base}-nats"}, "cockroachdb": {f"{base}-cockroachdb", *init}}
    for server, own in servers.items():
        policy = policies[f"{base}-{server}"]
        protected = {
            n
            for n, (labels, _) in everyone.items()
            if selects(policy["spec"]["podSelector"], labels)
        }
        assert protected == {f"{base}-{server}"}, f"the {server} policy guards the {server} pods"
        allowed = {name for name, (labels, ns) in everyone.items() if admits(policy, labels, ns)}
        assert allowed == {f"{base}-ingest", f"{base}-operator", *sinks, *own}, server
        assert f"{base}-test" not in allowed, "the helm test pod talks to the API only"


def test_the_sinks_the_operator_deploys_run_unprivileged() -> None:
    for role in naming.ROLES:
        pod = pod_spec(deployments.sink("lunch", role, Settings()))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        context = pod["containers"][0]["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def test_behind_the_ingress_rate_limits_count_the_forwarded_address(helm: Helm) -> None:
    def env(*values: str) -> dict[str, Any]:
        docs = helm.template(*values)
        [ingest] = [
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ingest")
        ]
        return {e["name"]: e.get("value") for e in pod_spec(ingest)["containers"][0]["env"]}

    assert env("--set", "ingest.ingress.enabled=true")["PRIVPOLL_PROXY_HOPS"] == "1"
    assert "PRIVPOLL_PROXY_HOPS" not in env(), "without an ingress nobody may claim an address"
