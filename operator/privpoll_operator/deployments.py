"""The two sink Deployments of a poll, as plain manifests (no I/O)."""

from __future__ import annotations

import json
from typing import Any

from privpoll.bus import naming
from privpoll.settings import Settings


def name_of(poll: str, role: naming.Role) -> str:
    return f"privpoll-{poll}-{role}"


def labels(poll: str, role: naming.Role) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "privpoll",
        "app.kubernetes.io/component": f"sink-{role}",
        "app.kubernetes.io/managed-by": "privpoll-operator",
        "privpoll.dev/poll": poll,
    }


def sink_env(settings: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PRIVPOLL_NATS_URL", "value": settings.sink_nats_url or settings.nats_url},
        {"name": "PRIVPOLL_LOG_LEVEL", "value": settings.log_level},
    ]
    if settings.database_secret:
        secret, _, key = settings.database_secret.partition(":")
        env.append(
            {
                "name": "PRIVPOLL_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key or "url"}},
            }
        )
    else:
        env.append({"name": "PRIVPOLL_DATABASE_URL", "value": settings.database_url})
    return env


def sink(poll: str, role: naming.Role, settings: Settings, replicas: int = 1) -> dict[str, Any]:
    """A Deployment running one sink of one poll: ``privpoll sink ROLE --poll NAME``."""
    selector = labels(poll, role)
    container: dict[str, Any] = {
        "name": "sink",
        "image": settings.sink_image,
        "command": ["privpoll"],
        "args": ["sink", role, "--poll", poll],
        "env": sink_env(settings),
        "resources": json.loads(settings.sink_resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if settings.database_ca_secret:
        container["volumeMounts"] = [
            {"name": "database-ca", "mountPath": settings.database_ca_dir, "readOnly": True}
        ]
        pod["volumes"] = [
            {
                "name": "database-ca",
                "secret": {
                    "secretName": settings.database_ca_secret,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name_of(poll, role), "labels": selector},
        "spec": {
            "replicas": replicas,
            # Two sink pods of one role would race for the same batches only to split them.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": pod,
            },
        },
    }
