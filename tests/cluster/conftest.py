"""The one-node cluster, brought up as far as each test needs (tests/cluster/cluster.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster, Refused, running
from tests.environment import only_under, refused_by_this_machine


def image_archives() -> list[Path]:
    """PRIVPOLL_IMAGE_ARCHIVES: image archives (`podman save -o X.tar IMAGE`) to import into
    the node, separated by spaces; the chart tests need the privpoll, NATS and PostgreSQL
    images among them."""
    return [Path(p) for p in os.environ.get("PRIVPOLL_IMAGE_ARCHIVES", "").split()]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for archive in image_archives():
        if not archive.is_file():
            pytest.fail(f"PRIVPOLL_IMAGE_ARCHIVES names {archive}, which is not a file")
    with running(tmp_path_factory.mktemp("cluster"), image_archives()) as found:
        yield found


def up_to(cluster: Cluster, step: str) -> Cluster:
    """The cluster brought up to `step`, or a skip carrying the error this machine gave."""
    try:
        cluster.reach(step)
    except Refused as error:
        refused_by_this_machine(f"the cluster step {step!r}", str(error))
    return cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Only `make e2e-cluster` (PRIVPOLL_CLUSTER=1) runs these: the first run builds the
    node's binaries for many minutes, and the node changes the machine's iptables."""
    if os.environ.get("PRIVPOLL_CLUSTER") == "1":
        return
    here = Path(__file__).parent
    skip = only_under(
        "make e2e-cluster",
        "a cold node build adds many minutes, and the node changes the machine's iptables",
    )
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(skip)
