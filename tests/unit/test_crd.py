"""The committed Poll CRD is the one the spec model generates; the sink Deployments are sound."""

from __future__ import annotations

from pathlib import Path

import pytest

from privpoll.settings import Settings
from privpoll_operator import crd, deployments

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["crds/poll.yaml", "charts/privpoll/crds/poll.yaml"])
def test_committed_crd_matches_the_model(path: str) -> None:
    committed = (ROOT / path).read_text()
    assert committed == crd.render(), (
        f"{path} is stale: run `python -m privpoll_operator.crd > {path}`"
    )


def test_crd_schema_is_structural() -> None:
    def walk(node: dict[str, object], path: str) -> None:
        assert "anyOf" not in node, path
        assert "$ref" not in node, path
        loose = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert "type" in node or loose, f"{path} has no type"
        for name, child in (node.get("properties") or {}).items():  # type: ignore[attr-defined]
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")  # type: ignore[arg-type]

    walk(crd.spec_schema(), "spec")


def test_sink_deployment_runs_the_sink_of_one_poll_unprivileged() -> None:
    settings = Settings(
        nats_url="nats://nats:4222", database_secret="privpoll-db:url", sink_image="privpoll:1"
    )
    body = deployments.sink("lunch", "ballots", settings)
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "privpoll:1"
    assert [*container["command"], *container["args"]] == [
        "privpoll", "sink", "ballots", "--poll", "lunch"
    ]  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["PRIVPOLL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "privpoll-db",
        "key": "url",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert body["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert body["spec"]["selector"]["matchLabels"]["privpoll.dev/poll"] == "lunch"


def test_sinks_mount_the_database_ca_when_the_dsn_verifies_the_server() -> None:
    settings = Settings(
        nats_url="nats://nats:4222",
        database_secret="privpoll-database:url",
        database_ca_secret="privpoll-database-ca",
    )
    pod = deployments.sink("lunch", "actors", settings)["spec"]["template"]["spec"]
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == settings.database_ca_dir
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "privpoll-database-ca"
    plain = deployments.sink("lunch", "actors", Settings(nats_url="nats://nats:4222"))
    assert "volumes" not in plain["spec"]["template"]["spec"]
