"""A voter list bigger than one object: several ConfigMaps, read in order by the operator."""

from __future__ import annotations

import secrets
from typing import Any

import yaml

from privpoll.db import storage
from privpoll.local.embedded import NatsServer, PostgresServer
from tests.e2e.controlplane import ROOT, ControlPlane, control_plane
from tests.e2e.test_operator import (
    Processes,
    admin_operator,
    condition,
    operator_env,
    procs,
    start_operator_as,
    wait_for,
)
from tests.integration.conftest import nats, postgres

__all__ = ["control_plane", "nats", "postgres", "procs"]


def test_voters_from_several_config_maps(
    control_plane: ControlPlane,
    nats: NatsServer,
    postgres: PostgresServer,
    procs: Processes,
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "crds" / "poll.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/polls.privpoll.dev", "--timeout=60s")
    start_operator_as(procs, admin_operator(operator_env(plane, nats, postgres)))
    name = f"union-{secrets.token_hex(3)}"
    # Four parts of 30,000 ids each (840 KB a part): 3.4 MB together, past what one object
    # holds.
    voters = [f"member-{i:06d}@union.example" for i in range(120_000)]
    parts = [voters[i : i + 30_000] for i in range(0, len(voters), 30_000)]
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-{n}"},
            "data": {"voters": f"# part {n}\n" + "\n".join(part) + "\n"},
        }
        for n, part in enumerate(parts)
    ]
    documents.append(
        {
            "apiVersion": "privpoll.dev/v1alpha1",
            "kind": "Poll",
            "metadata": {"name": name},
            "spec": {
                "title": "Strike or not?",
                "choices": ["yes", "no"],
                "voters": {"configMapRefs": [{"name": f"{name}-{n}"} for n in range(len(parts))]},
            },
        }
    )
    # create, not apply: apply would copy each ConfigMap into an annotation of 256 KB at most.
    plane.kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(documents))

    def ready() -> bool:
        found = condition(plane.get("poll", name), "Ready")
        return bool(found and found["status"] == "True")

    wait_for(ready, "the Poll to turn Ready", timeout=120)
    with storage.connect(postgres.dsn) as conn:
        assert storage.voter_ids(conn, name) == voters
    plane.kubectl("delete", "poll", name, "--timeout=60s")
