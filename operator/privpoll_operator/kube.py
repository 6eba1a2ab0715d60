"""The few Kubernetes calls the operator makes, over the official client (blocking; run them
in a thread)."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def apply_deployment(namespace: str, body: dict[str, Any]) -> None:
    """Create the Deployment, or bring an existing one to this spec."""
    apps: Any = client.AppsV1Api()  # it takes plain manifests as well as its models
    try:
        apps.create_namespaced_deployment(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
        apps.patch_namespaced_deployment(body["metadata"]["name"], namespace, body)


def scale_deployment(namespace: str, name: str, replicas: int) -> None:
    try:
        client.AppsV1Api().patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}
        )
    except ApiException as error:
        if error.status != 404:
            raise


def delete_deployment(namespace: str, name: str) -> None:
    try:
        client.AppsV1Api().delete_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise


def read_key(namespace: str, kind: str, name: str, key: str) -> str | None:
    """A ConfigMap's or Secret's value, None when the object or key is missing."""
    core = client.CoreV1Api()
    try:
        if kind == "Secret":
            secret = core.read_namespaced_secret(name, namespace)
            raw = (secret.data or {}).get(key)
            return base64.b64decode(raw).decode() if raw is not None else None
        config_map = core.read_namespaced_config_map(name, namespace)
        value: str | None = (config_map.data or {}).get(key)
        return value
    except ApiException as error:
        if error.status == 404:
            return None
        raise
