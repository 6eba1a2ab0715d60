"""Polls as Kubernetes resources: on a cluster the API creates a Poll and the operator
provisions it (stream, rows, sink Deployments), so both ways of creating a poll end alike."""

from __future__ import annotations

from typing import Any

from privpoll.core.spec import NewPoll

GROUP = "privpoll.dev"
VERSION = "v1alpha1"
PLURAL = "polls"
KIND = "Poll"


def resource(new: NewPoll) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": new.name},
        "spec": new.spec.to_document(),
    }


def load_config() -> None:
    """In a pod: its service account; elsewhere: the kubeconfig (KUBECONFIG)."""
    from kubernetes import config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def create_resource(namespace: str, new: NewPoll) -> bool:
    """Create the Poll; False if one of that name exists. Blocking: call it from a thread."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    load_config()
    api: Any = client.CustomObjectsApi()
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource(new))
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True
